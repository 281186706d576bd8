# Sourced by scripts/: installs what a script runs when it is missing.
#
# need_packages PROGRAM=PACKAGE...: every PROGRAM (a name on PATH, or a
# path) not found has its Debian PACKAGE installed with apt, all in one
# apt-get call (through sudo when not root). Without apt-get it does
# nothing, and the script's own use of the program then reports it.
need_packages() {
  local missing=() pair
  for pair in "$@"; do
    command -v "${pair%%=*}" >/dev/null 2>&1 || missing+=("${pair#*=}")
  done
  [ ${#missing[@]} -gt 0 ] || return 0
  install_packages "${missing[@]}"
}

# install_packages PACKAGE...: installs Debian packages with apt-get
# (through sudo when not root); without apt-get it does nothing.
install_packages() {
  local sudo=""
  command -v apt-get >/dev/null 2>&1 || return 0
  echo "installing $* (apt-get)" >&2
  [ "$(id -u)" = 0 ] || sudo="sudo"
  $sudo apt-get update -qq || true
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq "$@" >/dev/null
}
