#!/usr/bin/env bash
# Pin cluster.yaml's machine images to the newest release of each family in the cluster's region (needs the aws
# CLI with credentials): the lines marked `# gpu-ami` get the newest "Deep Learning Base OSS Nvidia Driver GPU AMI
# (Ubuntu 22.04)" (NVIDIA driver, Docker, container toolkit), those marked `# cpu-ami` the newest Canonical
# Ubuntu 22.04. Usage: scripts/pin_amis.sh [CLUSTER_YAML] [REGION]   (default: cluster.yaml, its provider.region)
set -euo pipefail
config=${1:-cluster.yaml}
region=${2:-$(awk '/^provider:/{p=1} p && /^  region:/{print $2; exit}' "$config")}
[ -n "$region" ] || { echo "no provider.region in $config: pass the region as the second argument" >&2; exit 2; }

latest() {  # owner, name pattern -> newest available x86_64 image id
  aws ec2 describe-images --region "$region" --owners "$1" \
    --filters "Name=name,Values=$2" "Name=state,Values=available" "Name=architecture,Values=x86_64" \
    --query 'sort_by(Images,&CreationDate)[-1].[ImageId,Name]' --output text
}
read -r gpu gpu_name < <(latest amazon 'Deep Learning Base OSS Nvidia Driver GPU AMI (Ubuntu 22.04) *')
read -r cpu cpu_name < <(latest 099720109477 'ubuntu/images/hvm-ssd/ubuntu-jammy-22.04-amd64-server-*')
for id in "$gpu" "$cpu"; do
  [[ $id =~ ^ami-[0-9a-f]{8,17}$ ]] || { echo "no image found in $region (got '$id'); check the aws CLI's credentials" >&2; exit 1; }
done
sed -i -E "s/^( *ImageId: )ami-[A-Za-z0-9-]+( +# gpu-ami)/\1$gpu\2/; s/^( *ImageId: )ami-[A-Za-z0-9-]+( +# cpu-ami)/\1$cpu\2/" "$config"
echo "pinned in $config ($region): gpu $gpu ($gpu_name), cpu $cpu ($cpu_name)"
echo "check the GPU image's NVIDIA driver in its release notes: it must be >= 570 (CUDA 12.8)"
