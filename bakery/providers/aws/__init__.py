"""The AWS provider: VPC and subnets, security groups, a network load balancer, one
EC2 instance per master, and a launch template for autoscaling groups (boto3, lazily).

`bakery.providers.get` calls `create(spec, paths, progress)`; tests pass
`client_factory=` to point real boto3 clients at moto with their own event hooks.
"""

from bakery.providers.aws.provider import AwsProvider, create

__all__ = ["AwsProvider", "create"]
