# Sourced by the project's scripts: go to the project root, put Swift on PATH and install
# the Debian packages. Sets $root. Exits the calling script when the install fails.
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$root" || exit 1
export PATH="$PATH:/opt/swift/usr/bin"
bash "$root/scripts/install-system-deps.sh" || exit 1
