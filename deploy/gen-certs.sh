#!/usr/bin/env bash
# Make the secrets a TLS + node-authenticated deployment needs, with openssl and
# ssh-keygen only (nothing is downloaded, nothing leaves this machine):
#
#   <out>/ca.crt ca.key              a private certificate authority
#   <out>/server.crt server.key      the SuperLink's certificate, signed by that CA,
#                                    valid for every address SuperNodes dial
#   <out>/nodes/node-<i>.key .pub    one ECDSA P-384 key pair per SuperNode (the public
#                                    halves are registered with `flwr supernode register`)
#   <out>/superexec.secret           shared secret between SuperLink/SuperNodes and
#                                    their SuperExec processes (process isolation)
#
#   deploy/gen-certs.sh [--out DIR] [--nodes N] [--ip ADDR]... [--dns NAME]... [--force]
#
# Default SANs: IP 127.0.0.1, the namespace addresses used by deploy/run-netns.sh
# (10.77.0.1) and DNS names localhost and superlink (the compose service). Existing
# files are kept (so re-running only adds missing node keys) unless --force is given.
# The CA and node private keys never go into an image: compose mounts <out> read-only.
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"

out="$here/certs"
nodes=2
ips=(127.0.0.1 10.77.0.1)
dns=(localhost superlink)
force=0
while [ $# -gt 0 ]; do
  case "$1" in
    --out) out="$2"; shift 2 ;;
    --nodes) nodes="$2"; shift 2 ;;
    --ip) ips+=("$2"); shift 2 ;;
    --dns) dns+=("$2"); shift 2 ;;
    --force) force=1; shift ;;
    -h|--help) sed -n 2,18p "$0"; exit 0 ;;
    *) echo "unknown argument: $1 (see --help)" >&2; exit 2 ;;
  esac
done
for tool in openssl ssh-keygen; do
  command -v "$tool" >/dev/null || { echo "gen-certs: $tool is required" >&2; exit 1; }
done
mkdir -p "$out/nodes"
chmod 700 "$out"
tmp="$(mktemp -d)"
trap 'rm -rf "$tmp"' EXIT

if [ "$force" = 1 ]; then
  rm -f "$out"/ca.* "$out"/server.* "$out"/superexec.secret "$out"/nodes/node-*
fi

if [ ! -f "$out/ca.crt" ]; then
  openssl req -x509 -newkey rsa:3072 -nodes -days 825 -sha256 \
    -subj "/CN=hyperflower deployment CA" \
    -keyout "$out/ca.key" -out "$out/ca.crt" 2>/dev/null
  chmod 600 "$out/ca.key"
  rm -f "$out/server.crt"   # a new CA invalidates any old server certificate
fi

if [ ! -f "$out/server.crt" ]; then
  san=""
  for ip in "${ips[@]}"; do san+="IP:$ip,"; done
  for name in "${dns[@]}"; do san+="DNS:$name,"; done
  san="${san%,}"
  cat > "$tmp/server.ext" <<EOF
basicConstraints = critical, CA:FALSE
keyUsage = critical, digitalSignature, keyEncipherment
extendedKeyUsage = serverAuth
subjectAltName = $san
EOF
  openssl req -newkey rsa:3072 -nodes -sha256 -subj "/CN=superlink" \
    -keyout "$out/server.key" -out "$tmp/server.csr" 2>/dev/null
  openssl x509 -req -in "$tmp/server.csr" -CA "$out/ca.crt" -CAkey "$out/ca.key" \
    -CAcreateserial -CAserial "$tmp/ca.srl" -days 825 -sha256 \
    -extfile "$tmp/server.ext" -out "$out/server.crt" 2>/dev/null
  chmod 600 "$out/server.key"
  echo "gen-certs: server certificate for $san"
fi

for i in $(seq 0 $((nodes - 1))); do
  key="$out/nodes/node-$i.key"
  if [ ! -f "$key" ]; then
    ssh-keygen -q -t ecdsa -b 384 -N "" -C "hyperflower-node-$i" -f "$key"
    mv "$key.pub" "$out/nodes/node-$i.pub"
  fi
done

if [ ! -f "$out/superexec.secret" ]; then
  openssl rand -hex 32 | tr -d '\n' > "$out/superexec.secret"
  chmod 600 "$out/superexec.secret"
fi
# Private keys stay 0600: containers run as the owner's uid (compose `user:`).
chmod 755 "$out" "$out/nodes"
echo "gen-certs: $out (CA, server certificate, $nodes node keys)"
