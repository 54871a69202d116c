module "dev_front_end" {
  source = "github.com/cloudlena/terraform-spa?ref=1.0.2"
  providers = {
    aws.us_east = aws.us_east
  }

  service_name    = "cp_front_end"
  domain          = aws_route53_zone.dev.name
  environment     = local.dev_environment
  resource_suffix = local.dev_resource_suffix
}
