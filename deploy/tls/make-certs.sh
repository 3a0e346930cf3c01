#!/usr/bin/env bash
# Makes a private CA, a server certificate for the Redis host names given, and one client certificate per
# ACL user (mutual TLS), for the compose TLS overlay (deploy/compose.tls.yaml). Example certificates only:
# in production, take them from your PKI (cert-manager, Vault, ...).
#   bash deploy/tls/make-certs.sh deploy/tls/certs redis 127.0.0.1
set -euo pipefail
out=${1:?usage: make-certs.sh OUT_DIR [HOST_OR_IP ...]}
shift
hosts=("${@:-redis}")
days=${DAYS:-365}
mkdir -p "$out"
cd "$out"
san=""
for h in "${hosts[@]}"; do
  if [[ $h =~ ^[0-9.]+$ ]]; then san+="IP:$h,"; else san+="DNS:$h,"; fi
done
san=${san%,}
openssl req -x509 -newkey rsa:2048 -nodes -keyout ca.key -out ca.pem -days "$days" -subj "/CN=redis-infer CA" 2>/dev/null
openssl req -newkey rsa:2048 -nodes -keyout server.key -out server.csr -subj "/CN=${hosts[0]}" 2>/dev/null
printf 'subjectAltName=%s\nextendedKeyUsage=serverAuth\n' "$san" > server.ext
openssl x509 -req -in server.csr -CA ca.pem -CAkey ca.key -CAcreateserial -out server.pem -days "$days" \
  -extfile server.ext 2>/dev/null
for user in worker producer monitor operator; do
  openssl req -newkey rsa:2048 -nodes -keyout "$user.key" -out "$user.csr" -subj "/CN=$user" 2>/dev/null
  printf 'extendedKeyUsage=clientAuth\n' > client.ext
  openssl x509 -req -in "$user.csr" -CA ca.pem -CAkey ca.key -CAcreateserial -out "$user.pem" -days "$days" \
    -extfile client.ext 2>/dev/null
done
rm -f ./*.csr ./*.ext ca.srl
chmod 0644 ./*.pem ./*.key   # the redis and worker containers run as other users; keep this folder private
echo "wrote CA, server (${hosts[*]}) and client certificates (worker, producer, monitor, operator) to $out"
