#!/usr/bin/env bash
# Starts a one-machine Ceph test cluster on loopback: one monitor, one manager, three OSDs on
# file-backed BlueStore with small memory targets, and a replicated pool (size 3, min_size 2).
#
#   tests/cluster/start-ceph.sh [DIR]      (DIR default: $GISTMEM_CEPH_DIR or /tmp/gistmem-ceph)
#
# Idempotent: when a cluster in DIR answers already, it is left as it is; a dead one is wiped
# and made anew. Prints "ceph ready: DIR/ceph.conf pool POOL" once the pool's placement groups
# are active+clean. Environment: GISTMEM_CEPH_PORT (monitor port, default 46789),
# GISTMEM_CEPH_POOL (default gistmem), GISTMEM_CEPH_OSDS (default 3). Needs root (OSDs lock
# their files and raise limits); no systemd. Stop with tests/cluster/stop-ceph.sh DIR.
set -euo pipefail

dir=${1:-${GISTMEM_CEPH_DIR:-/tmp/gistmem-ceph}}
port=${GISTMEM_CEPH_PORT:-46789}
pool=${GISTMEM_CEPH_POOL:-gistmem}
osds=${GISTMEM_CEPH_OSDS:-3}
conf=$dir/ceph.conf

for tool in ceph ceph-mon ceph-mgr ceph-osd monmaptool ceph-authtool; do
  if ! command -v "$tool" >/dev/null 2>&1; then
    echo "start-ceph: $tool is missing (scripts/install-deps installs ceph-mon ceph-osd ceph-mgr)" >&2
    exit 1
  fi
done

ceph_cmd() { timeout 30 ceph -c "$conf" --connect-timeout 10 "$@"; }

wait_clean() {
  local deadline=$((SECONDS + ${GISTMEM_CEPH_TIMEOUT:-180}))
  while ((SECONDS < deadline)); do
    local stat
    stat=$(ceph_cmd pg stat 2>/dev/null || true)
    # "8 pgs: 8 active+clean; ..." and every OSD up
    if [[ $stat =~ ^([0-9]+)\ pgs:\ ([0-9]+)\ active\+clean\; ]] &&
      [[ ${BASH_REMATCH[1]} == "${BASH_REMATCH[2]}" ]] &&
      ceph_cmd osd stat 2>/dev/null | grep -q "$osds osds: $osds up"; then
      return 0
    fi
    sleep 1
  done
  echo "start-ceph: the cluster in $dir is not active+clean after ${GISTMEM_CEPH_TIMEOUT:-180}s:" >&2
  ceph_cmd -s >&2 || true
  tail -n 20 "$dir"/log/*.log >&2 || true
  return 1
}

if [[ -f $conf ]] && ceph_cmd osd pool ls 2>/dev/null | grep -qx "$pool"; then
  wait_clean
  echo "ceph ready: $conf pool $pool"
  exit 0
fi

# Nothing usable there: stop whatever is left and start afresh.
"$(dirname "${BASH_SOURCE[0]}")/stop-ceph.sh" "$dir" >/dev/null 2>&1 || true
rm -rf "$dir"
mkdir -p "$dir"/{run,log,mon/ceph-a,mgr/ceph-x}
fsid=$(cat /proc/sys/kernel/random/uuid)

cat >"$conf" <<CONF
[global]
fsid = $fsid
mon_host = v2:127.0.0.1:$port
public_network = 127.0.0.0/8
ms_bind_msgr1 = false
ms_bind_ipv6 = false
auth_cluster_required = none
auth_service_required = none
auth_client_required = none
keyring = $dir/keyring
run_dir = $dir/run
pid_file = $dir/run/\$name.pid
admin_socket = $dir/run/\$name.asok
log_file = $dir/log/\$name.log
mon_cluster_log_file = $dir/log/cluster.log
crash_dir = $dir/crash
# One host: replicas go to different OSDs, not different hosts.
osd_crush_chooseleaf_type = 0
osd_pool_default_size = 3
osd_pool_default_min_size = 2
osd_pool_default_pg_autoscale_mode = off
mon_allow_pool_delete = true
mon_warn_on_pool_no_redundancy = false
mon_data_avail_warn = 1
mon_data_avail_crit = 0
# A killed OSD is marked down at once (its peers see the connection refused).
mon_osd_min_down_reporters = 1
osd_heartbeat_grace = 6
osd_heartbeat_interval = 2
ms_async_op_threads = 1
[mon]
mon_data = $dir/mon/\$cluster-\$id
[mgr]
mgr_data = $dir/mgr/\$cluster-\$id
mgr_initial_modules =
[osd]
osd_data = $dir/osd/\$cluster-\$id
osd_objectstore = bluestore
bluestore_block_create = true
bluestore_block_size = 1073741824
bluestore_fsck_on_mkfs = false
bluestore_fsck_on_mount = false
bluestore_cache_autotune = false
bluestore_cache_size = 67108864
osd_memory_target = 536870912
osd_memory_cache_min = 33554432
osd_op_num_shards = 1
osd_op_num_threads_per_shard = 2
osd_max_backfills = 4
osd_recovery_sleep = 0
CONF

ceph-authtool --create-keyring "$dir/keyring" --gen-key -n mon. --cap mon 'allow *' >/dev/null
monmaptool --create --fsid "$fsid" --addv a "[v2:127.0.0.1:$port]" "$dir/monmap" >/dev/null
ceph-mon -c "$conf" --mkfs -i a --monmap "$dir/monmap" --keyring "$dir/keyring"
ceph-mon -c "$conf" -i a
ceph-mgr -c "$conf" -i x

for ((i = 0; i < osds; i++)); do
  uuid=$(cat /proc/sys/kernel/random/uuid)
  id=$(ceph_cmd osd new "$uuid")
  mkdir -p "$dir/osd/ceph-$id"
  ceph-osd -c "$conf" -i "$id" --mkfs --osd-uuid "$uuid" 2>>"$dir/log/mkfs.log"
  ceph-osd -c "$conf" -i "$id"
done

ceph_cmd osd pool create "$pool" 16 16 replicated >/dev/null
ceph_cmd osd pool set "$pool" size 3 >/dev/null
ceph_cmd osd pool set "$pool" min_size 2 >/dev/null
ceph_cmd osd pool application enable "$pool" gistmem >/dev/null
wait_clean
echo "ceph ready: $conf pool $pool"
