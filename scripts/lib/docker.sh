# Shared by the scripts that drive Docker (docker-e2e.sh, docker-e2e-arm64.sh, compose-profiles-check.sh) and the
# qemu checks (arm64-check.sh). Sourced, not run.

# The timed log and the failure exit of every check; the clock starts when this file is sourced.
t0=$SECONDS
LOG_PREFIX=""
log() { printf '== [%4ds] %s%s\n' $((SECONDS - t0)) "$LOG_PREFIX" "$*"; }
die() { printf 'FAIL: %s\n' "$*" >&2; exit 1; }

# start_report FILE: empties FILE (creating its folder) as $REPORT, which note() appends to and prints.
start_report() {
  REPORT="$1"
  mkdir -p "$(dirname "$REPORT")"
  : >"$REPORT"
}
note() { printf '%s\n' "$*" | tee -a "$REPORT"; }

# COMPOSE: the compose command this machine has (v2 plugin, else v1), empty if none.
find_compose() {
  if docker compose version >/dev/null 2>&1; then COMPOSE=(docker compose)
  elif command -v docker-compose >/dev/null; then COMPOSE=(docker-compose)
  else COMPOSE=()
  fi
}

# Installs Docker and compose from Debian when missing and starts dockerd when none answers, logging to
# $1/dockerd.log. DOCKERD_PID is set only for a daemon started here, so that stop_own_dockerd leaves a daemon
# somebody else runs alone.
DOCKERD_PID=""
ensure_docker() {
  local out="$1"
  find_compose
  if ! command -v dockerd >/dev/null || ((${#COMPOSE[@]} == 0)); then
    log "installing docker.io and docker-compose from Debian"
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq docker.io docker-compose >/dev/null
    COMPOSE=(docker-compose)
  fi
  if ! docker info >/dev/null 2>&1; then
    dockerd --storage-driver overlay2 >"$out/dockerd.log" 2>&1 &
    DOCKERD_PID=$!
    for _ in $(seq 60); do docker info >/dev/null 2>&1 && break; sleep 0.5; done
    docker info >/dev/null 2>&1 || { tail -20 "$out/dockerd.log"; die "dockerd did not start"; }
  fi
}

stop_own_dockerd() {
  if [[ -n "$DOCKERD_PID" ]]; then
    log "stopping the dockerd this script started (pid $DOCKERD_PID)"
    kill "$DOCKERD_PID" 2>/dev/null; wait "$DOCKERD_PID" 2>/dev/null
  fi
}

# An ARM /proc/cpuinfo for emulated aarch64 processes: qemu 7.2 shows them the host's x86 one, and ONNX Runtime's
# CPU detection then crashes (SIGSEGV) while loading the first model.
write_arm_cpuinfo() {
  local file="$1"
  : >"$file"
  for cpu in 0 1; do
    cat >>"$file" <<CPUINFO
processor	: $cpu
BogoMIPS	: 50.00
Features	: fp asimd evtstrm aes pmull sha1 sha2 crc32 atomics fphp asimdhp cpuid asimdrdm lrcpc dcpop asimddp ssbs
CPU implementer	: 0x41
CPU architecture: 8
CPU variant	: 0x3
CPU part	: 0xd0c
CPU revision	: 1

CPUINFO
  done
}
