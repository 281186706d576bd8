# Sourced by scripts/: installs what a script runs when it is missing.
#
# need_packages PROGRAM=PACKAGE...: every PROGRAM (a name on PATH, or a
# path) not found has its Debian PACKAGE installed with apt, all in one
# apt-get call (through sudo when not root). Without apt-get it does
# nothing, and the script's own use of the program then reports it.
need_packages() {
  local missing=() pair sudo=""
  for pair in "$@"; do
    command -v "${pair%%=*}" >/dev/null 2>&1 || missing+=("${pair#*=}")
  done
  [ ${#missing[@]} -gt 0 ] && command -v apt-get >/dev/null 2>&1 || return 0
  echo "installing ${missing[*]} (apt-get)" >&2
  [ "$(id -u)" = 0 ] || sudo="sudo"
  $sudo apt-get update -qq || true
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq "${missing[@]}" >/dev/null
}
