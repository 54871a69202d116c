resource "aws_route53_zone" "main" {
  name = "demo-app.example.com"
}
