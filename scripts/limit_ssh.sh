#!/usr/bin/env bash
# Limit SSH into the cluster to one address range (needs the aws CLI with credentials). Without this, the security
# group Ray creates for the cluster admits SSH (tcp 22) from 0.0.0.0/0: Ray adds that rule to every group it makes.
# This makes the group itself, in the region's default VPC, with two rules only: all traffic between the cluster's
# own nodes, and SSH from CIDR; then it names the group in every node type of cluster.yaml (the lines marked
# `# limit-ssh`), and Ray adds no rules to a group given by id.
# Usage: scripts/limit_ssh.sh [CIDR] [CLUSTER_YAML]   (default: your public address /32, cluster.yaml)
set -euo pipefail
cidr=${1:-}
config=${2:-cluster.yaml}
region=$(awk '/^provider:/{p=1} p && /^  region:/{print $2; exit}' "$config")
group=$(awk '/^provider:/{p=1} p && /^    GroupName:/{print $2; exit}' "$config")
[ -n "$region" ] && [ -n "$group" ] || { echo "no provider.region or security_group.GroupName in $config" >&2; exit 2; }
if [ -z "$cidr" ]; then
  cidr="$(curl -fsS https://checkip.amazonaws.com | tr -d '[:space:]')/32"
fi
[[ $cidr =~ ^[0-9]{1,3}(\.[0-9]{1,3}){3}/([0-9]|[12][0-9]|3[0-2])$ ]] || { echo "not an IPv4 CIDR: '$cidr'" >&2; exit 2; }
[ "${cidr#*/}" -ge 8 ] || { echo "$cidr is wider than a /8: name your own address or network" >&2; exit 2; }
vpc=$(aws ec2 describe-vpcs --region "$region" --filters Name=is-default,Values=true --query 'Vpcs[0].VpcId' --output text)
[[ $vpc =~ ^vpc- ]] || { echo "no default VPC in $region (got '$vpc')" >&2; exit 1; }
sg=$(aws ec2 create-security-group --region "$region" --vpc-id "$vpc" --group-name "$group-ssh-limited" \
  --description "genie-redux Ray cluster: SSH from $cidr only" --query GroupId --output text)
[[ $sg =~ ^sg-[0-9a-f]+$ ]] || { echo "could not create the security group (got '$sg')" >&2; exit 1; }
aws ec2 authorize-security-group-ingress --region "$region" --group-id "$sg" \
  --ip-permissions "IpProtocol=-1,UserIdGroupPairs=[{GroupId=$sg}]" >/dev/null
aws ec2 authorize-security-group-ingress --region "$region" --group-id "$sg" --protocol tcp --port 22 --cidr "$cidr" >/dev/null
sed -i -E "s/^( *)# (SecurityGroupIds: )\[sg-[A-Za-z0-9-]+\]( +# limit-ssh)/\1\2[$sg]\3/; s/^( *SecurityGroupIds: )\[sg-[A-Za-z0-9-]+\]( +# limit-ssh)/\1[$sg]\2/" "$config"
echo "security group $sg in $vpc ($region): traffic between the cluster's nodes, SSH from $cidr only; named in $config"
