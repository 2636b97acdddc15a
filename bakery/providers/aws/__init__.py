"""The AWS provider: VPC and subnets, security groups, a network load balancer, and the
masters: one autoscaling group from the cluster's launch template (aws.masters: asg,
group.py) or one EC2 instance per master (instances.py); boto3, lazily.

`bakery.providers.get` calls `create(spec, paths, progress)`; tests pass
`client_factory=` to point real boto3 clients at moto with their own event hooks.
"""

from bakery.providers.aws.provider import AwsProvider, create

__all__ = ["AwsProvider", "create"]
