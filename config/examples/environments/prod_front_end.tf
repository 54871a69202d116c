module "prod_front_end" {
  source = "git::https://example.com/acme/infra.git//modules/spa?ref=1.0.2&depth=1"
  service_name = "cp_front_end" # {not a brace}
}

module "monitoring" {
  source  = "terraform-aws-modules/cloudwatch/aws"
  version = "4.3.0"
}