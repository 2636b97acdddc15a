"""bakery-node: the agent on every master that turns an instance booted from the
cluster's image, with the cluster's one small user-data, into a full master.

    identity.py     who am I: instance id, private address, zone, hostname (instance-data.json)
    description.py  what cluster: the frozen description in the store, checked against its digest
    agent.py        the steps: identity -> description -> CA material -> own leaves -> render -> etcd
    join.py         etcd membership: day 0 bootstrap, day 2 learner join, promotion
    leave.py        at shutdown: own member out first (quorum kept), record forgotten, group hook completed
    ec2.py          EC2's word on a member's instance (is it gone?), boto3 clients for the instance's region
    main.py         the console script `bakery-node` (logs one line per step to the journal)

The agent renders with the same builders `bakery render` runs (STYLE.md #12): one
source for every flag, and a golden test shows both produce the same tree.
"""
