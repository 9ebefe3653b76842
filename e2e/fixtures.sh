#!/usr/bin/env bash
# Writes fake credentials for all 16 builtin providers into a fresh controller
# HOME, with values that are easy to grep (each carries the run's marker).
# Usage: e2e/fixtures.sh DIR
# Makes:  DIR/home/...          the provider files (aws, azure, gcp, github,
#                               huggingface, kubernetes, lambda, ~/.ssh/id_e2e, sky-key)
#         DIR/fixture.env       KEY=VALUE lines for the env-only providers
#                               (docker, anthropic, cohere, langchain, openai, pinecone, wandb)
#         DIR/markers.tsv       label<TAB>value<TAB>secret|public, one per fixture value
# Nothing here is a real credential.
set -euo pipefail
dir=${1:?usage: fixtures.sh DIR}
umask 077
rm -rf "$dir"
mkdir -p "$dir/home"
H=$dir/home
run=$(head -c 6 /dev/urandom | od -An -tx1 | tr -d ' \n')
M="RHE2E${run}"
markers=$dir/markers.tsv
: >"$markers"
mark() { printf '%s\t%s\t%s\n' "$1" "$2" "${3:-secret}" >>"$markers"; }

mkdir -p "$H/.aws" "$H/.azure" "$H/.config/gcloud" "$H/.config/gh" \
  "$H/.cache/huggingface" "$H/.kube" "$H/.lambda_cloud" "$H/.ssh"

aws_id="AKIA${M}AWSID" aws_key="${M}awsSecretKey0aws"
printf '[default]\naws_access_key_id = %s\naws_secret_access_key = %s\n' "$aws_id" "$aws_key" \
  >"$H/.aws/credentials"
mark aws.access_key "$aws_id"; mark aws.secret_key "$aws_key"

az_sub="${M}-azure-subscription"
printf '[AzureCloud]\nsubscription = %s\n' "$az_sub" >"$H/.azure/clouds.config"
mark azure.subscription_id "$az_sub"

gcp_id="${M}-gcpclient.apps.googleusercontent.com" gcp_secret="${M}gcpClientSecret" gcp_refresh="1//${M}gcpRefreshToken"
cat >"$H/.config/gcloud/application_default_credentials.json" <<JSON
{
  "client_id": "$gcp_id",
  "client_secret": "$gcp_secret",
  "refresh_token": "$gcp_refresh",
  "type": "authorized_user"
}
JSON
mark gcp.client_id "$gcp_id"; mark gcp.client_secret "$gcp_secret"; mark gcp.refresh_token "$gcp_refresh"

gh_token="gho_${M}githubToken"
cat >"$H/.config/gh/hosts.yml" <<YAML
github.com:
    user: rh-e2e-user
    oauth_token: $gh_token
    git_protocol: https
YAML
mark github.oauth_token "$gh_token"; mark github.user rh-e2e-user public

hf_token="hf_${M}huggingfaceToken"
printf '%s' "$hf_token" >"$H/.cache/huggingface/token"
mark huggingface.token "$hf_token"

kube_token="${M}kubeBearerToken"
cat >"$H/.kube/config" <<YAML
apiVersion: v1
kind: Config
clusters:
- cluster:
    server: https://127.0.0.1:6443
    insecure-skip-tls-verify: true
  name: e2e
contexts:
- context:
    cluster: e2e
    user: e2e-user
  name: e2e
current-context: e2e
users:
- name: e2e-user
  user:
    token: $kube_token
YAML
mark kubernetes.token "$kube_token"

lambda_key="secret_${M}lambdaApiKey"
printf 'api_key = %s\n' "$lambda_key" >"$H/.lambda_cloud/lambda_keys"
mark lambda.api_key "$lambda_key"

# ssh-id_e2e and sky: real key pairs (ssh-keygen -y must work on the nodes). The
# first two base64 lines of an ed25519 key are the same for every key; the
# rest (check ints, private scalar) are this key's and are the markers.
for k in id_e2e sky-key; do
  ssh-keygen -q -t ed25519 -N '' -C "rh-e2e-$k" -f "$H/.ssh/$k"
  label=ssh-id_e2e; [ "$k" = sky-key ] && label=sky
  sed -n '4,$p' "$H/.ssh/$k" | grep -v -- '-----' | while read -r line; do
    mark "$label.private_key" "$line"
  done
done

{
  echo "SKYPILOT_DOCKER_USERNAME=rh-e2e-docker-user"
  echo "SKYPILOT_DOCKER_PASSWORD=${M}dockerPassword"
  echo "SKYPILOT_DOCKER_SERVER=docker.e2e.invalid"
  echo "ANTHROPIC_API_KEY=sk-ant-${M}anthropic"
  echo "COHERE_API_KEY=${M}cohereKey"
  echo "LANGCHAIN_API_KEY=lsv2_${M}langchain"
  echo "OPENAI_API_KEY=sk-${M}openaiKey"
  echo "PINECONE_API_KEY=pcsk_${M}pinecone"
  echo "WANDB_API_KEY=${M}wandbApiKey0000000000"
} >"$dir/fixture.env"
mark docker.username rh-e2e-docker-user public
mark docker.password "${M}dockerPassword"
mark docker.server docker.e2e.invalid public
mark anthropic.api_key "sk-ant-${M}anthropic"
mark cohere.api_key "${M}cohereKey"
mark langchain.api_key "lsv2_${M}langchain"
mark openai.api_key "sk-${M}openaiKey"
mark pinecone.api_key "pcsk_${M}pinecone"
mark wandb.api_key "${M}wandbApiKey0000000000"
echo "$dir"
