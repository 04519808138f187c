# shellcheck shell=bash
# One npm package, pinned, installed into a cache outside the clone
# (sourced by the install-*.sh scripts for npm peers).
#
#   npm_cached_install <package> <version> <file that proves it is installed, under the install root>
#
# Prints the install root; installs (with Debian's nodejs and npm when
# missing and run as root) only when the file is absent. INKAN_CACHE is the
# cache root (default ~/.cache/inkan).
npm_cached_install() {
  local package="$1" version="$2" marker="$3"
  local root="${INKAN_CACHE:-$HOME/.cache/inkan}/$package-$version"
  if [[ -e "$root/$marker" ]]; then
    echo "$root"
    return 0
  fi
  if ! command -v npm >/dev/null; then
    if [[ "$(id -u)" == 0 ]]; then
      (apt-get update -qq && apt-get install -y -qq nodejs npm) >/dev/null
    else
      echo "needs node and npm: sudo apt-get install -y nodejs npm" >&2
      return 1
    fi
  fi
  mkdir -p "$root"
  echo "installing $package $version into $root (first run only)" >&2
  npm install --prefix "$root" --no-audit --no-fund --loglevel=error "$package@$version" >&2
  echo "$root"
}
