#!/usr/bin/env bash
# Builds line-agent's macOS installer package: `make pkg`. Needs a Mac with
# Xcode's command line tools (pkgbuild, productbuild, lipo) and Go.
#
# It cross-builds line-agent for arm64 and amd64, joins them into one
# universal binary installed at /usr/local/bin/line-agent (root-owned, on
# every user's PATH, one stable path for Full Disk Access), and wraps it in a
# component package with a postinstall script and a product archive with
# the distribution file next to this script. docs/operations.md, "Building
# the package", has the why.
#
# Environment (all optional):
#   GO                 the go command (default: go)
#   VERSION            version stamped into the binary (default: git describe)
#   OUT_DIR            where the .pkg is written (default: bin/)
#   APP_SIGN_IDENTITY  "Developer ID Application: ..." to codesign the binary
#                      (hardened runtime, secure timestamp)
#   PKG_SIGN_IDENTITY  "Developer ID Installer: ..." to sign the package
#   NOTARY_PROFILE     a notarytool keychain profile (xcrun notarytool
#                      store-credentials): submit, wait, staple
set -euo pipefail

here=$(cd "$(dirname "$0")" && pwd)
repo=$(cd "$here/../.." && pwd)

if [ "$(uname -s)" != Darwin ] || ! command -v pkgbuild >/dev/null 2>&1; then
  echo "make pkg needs macOS: pkgbuild not found (this is $(uname -s); pkgbuild, productbuild and lipo come with Xcode's command line tools: xcode-select --install)" >&2
  exit 1
fi
for tool in productbuild lipo; do
  command -v "$tool" >/dev/null 2>&1 || { echo "make pkg: $tool not found (xcode-select --install)" >&2; exit 1; }
done

GO=${GO:-go}
VERSION=${VERSION:-$(git -C "$repo" describe --tags --always --dirty 2>/dev/null || echo dev)}
case "$VERSION" in
  "" | *[!A-Za-z0-9._+-]*) echo "make pkg: VERSION must be letters, digits and ._+- only, not '$VERSION'" >&2; exit 2 ;;
esac
# The Installer compares package versions as dotted numbers: v1.4.0 is
# 1.4.0, v1.4.0-7-gabc123 (7 commits later) is 1.4.0.7, no tag is 0.0.0.
re='^v?([0-9]+(\.[0-9]+)*)(-([0-9]+)-g[0-9a-f]+)?'
if [[ $VERSION =~ $re ]]; then
  pkg_version=${BASH_REMATCH[1]}${BASH_REMATCH[4]:+.${BASH_REMATCH[4]}}
else
  pkg_version=0.0.0
fi
if [ -n "${NOTARY_PROFILE:-}" ] && { [ -z "${APP_SIGN_IDENTITY:-}" ] || [ -z "${PKG_SIGN_IDENTITY:-}" ]; }; then
  echo "make pkg: NOTARY_PROFILE needs APP_SIGN_IDENTITY and PKG_SIGN_IDENTITY: Apple notarizes only signed code in a signed package" >&2
  exit 2
fi

out_dir=${OUT_DIR:-$repo/bin}
out="$out_dir/line-agent-$VERSION.pkg"
work=$(mktemp -d "${TMPDIR:-/tmp}/line-agent-pkg.XXXXXX")
trap 'rm -rf "$work"' EXIT
mkdir -p "$work/root" "$work/pkgs" "$out_dir"
# pkgbuild gives the install location the root folder's mode.
chmod 0755 "$work/root"

ldflags="-s -w -X github.com/line-agent/line-agent/agent.Version=$VERSION"
for arch in arm64 amd64; do
  echo "building line-agent $VERSION for darwin/$arch"
  (cd "$repo" && CGO_ENABLED=0 GOOS=darwin GOARCH=$arch "$GO" build -trimpath -ldflags "$ldflags" -o "$work/line-agent-$arch" ./cmd/agent)
done
lipo -create -output "$work/root/line-agent" "$work/line-agent-arm64" "$work/line-agent-amd64"
chmod 0755 "$work/root/line-agent"

if [ -n "${APP_SIGN_IDENTITY:-}" ]; then
  echo "signing the binary as $APP_SIGN_IDENTITY"
  codesign --force --options runtime --timestamp --identifier dev.line-agent.agent \
    --sign "$APP_SIGN_IDENTITY" "$work/root/line-agent"
  codesign --verify --strict --verbose=2 "$work/root/line-agent"
else
  echo "note: APP_SIGN_IDENTITY not set: the binary keeps Go's ad-hoc signature (not for distribution)"
fi

pkgbuild --root "$work/root" --install-location /usr/local/bin \
  --identifier dev.line-agent.agent --version "$pkg_version" \
  --scripts "$here/scripts" --ownership recommended \
  "$work/pkgs/line-agent-component.pkg"

# pkg_version is digits and dots only (above), so it is safe in sed.
sed "s/@VERSION@/$pkg_version/g" "$here/distribution.xml" > "$work/distribution.xml"
sign=()
if [ -n "${PKG_SIGN_IDENTITY:-}" ]; then
  sign=(--sign "$PKG_SIGN_IDENTITY" --timestamp)
else
  echo "note: PKG_SIGN_IDENTITY not set: the package is unsigned (Gatekeeper refuses it on other Macs)"
fi
# ${sign[@]+...}: macOS's bash 3.2 treats an empty array as unset under set -u.
productbuild --distribution "$work/distribution.xml" --resources "$here/resources" \
  --package-path "$work/pkgs" ${sign[@]+"${sign[@]}"} "$out"

if [ -n "${PKG_SIGN_IDENTITY:-}" ]; then
  pkgutil --check-signature "$out"
fi
if [ -n "${NOTARY_PROFILE:-}" ]; then
  echo "notarizing (this waits for Apple)"
  xcrun notarytool submit "$out" --keychain-profile "$NOTARY_PROFILE" --wait
  xcrun stapler staple "$out"
  xcrun stapler validate "$out"
fi
echo "built $out (package version $pkg_version)"
