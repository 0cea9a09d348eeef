#!/usr/bin/env bash
# Makes a cluster CA and one certificate per node, for a test cluster (or a start):
# every node of a mediasync cluster shows a certificate the cluster CA signed, and
# accepts only peers that do ([cluster] ca, cert, key).
#
# Usage: scripts/cluster-certs.sh DIR NODE...
#   DIR/ca.pem, DIR/ca.key           the cluster CA (keep ca.key off the nodes)
#   DIR/NODE.pem, DIR/NODE.key       per node: certificate and private key
# An existing CA in DIR is reused, so nodes can be added later. Keys are EC P-256,
# certificates valid 825 days (CA: 10 years). Needs the openssl command.
set -euo pipefail

die() { printf 'cluster-certs: ERROR: %s\n' "$*" >&2; exit 2; }
usage() { awk 'NR > 1 && /^#/ { sub(/^# ?/, ""); print; next } NR > 1 { exit }' "$0"; }

[[ ${1:-} == -h || ${1:-} == --help ]] && { usage; exit 0; }
[[ $# -ge 2 ]] || { usage >&2; die "need DIR and at least one NODE name"; }
command -v openssl >/dev/null || die "openssl not found (apt-get install openssl)"
dir=$1; shift
mkdir -p -- "$dir" || die "cannot create '$dir'"
umask 077

if [[ ! -s $dir/ca.pem || ! -s $dir/ca.key ]]; then
  openssl req -x509 -new -nodes -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 \
    -keyout "$dir/ca.key" -out "$dir/ca.pem" -days 3650 -subj "/CN=mediasync cluster CA" \
    -addext "basicConstraints=critical,CA:TRUE" -addext "keyUsage=critical,keyCertSign,cRLSign" \
    2>/dev/null || die "cannot make the CA in '$dir'"
  printf 'cluster-certs: made the cluster CA %s/ca.pem\n' "$dir"
fi

for node in "$@"; do
  [[ $node =~ ^[A-Za-z0-9._-]{1,64}$ ]] || die "'$node' is not a node name (letters, digits, . _ -)"
  ext=$(mktemp)
  trap 'rm -f "$ext"' EXIT
  printf '%s\n' "basicConstraints=critical,CA:FALSE" \
    "keyUsage=critical,digitalSignature,keyEncipherment" \
    "extendedKeyUsage=serverAuth,clientAuth" \
    "subjectAltName=DNS:$node,DNS:localhost,IP:127.0.0.1" > "$ext"
  openssl req -new -nodes -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 \
    -keyout "$dir/$node.key" -out "$dir/$node.csr" -subj "/CN=$node" 2>/dev/null \
    || die "cannot make the key of '$node'"
  openssl x509 -req -in "$dir/$node.csr" -CA "$dir/ca.pem" -CAkey "$dir/ca.key" \
    -CAcreateserial -out "$dir/$node.pem" -days 825 -extfile "$ext" 2>/dev/null \
    || die "cannot sign the certificate of '$node'"
  rm -f "$dir/$node.csr" "$ext"
  openssl verify -CAfile "$dir/ca.pem" "$dir/$node.pem" >/dev/null \
    || die "the certificate of '$node' does not verify against the CA"
  printf 'cluster-certs: %s/%s.pem and %s.key (node %s)\n' "$dir" "$node" "$node" "$node"
done
