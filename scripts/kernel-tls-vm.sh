#!/usr/bin/env bash
# Runs glance-stream's kernel-TLS tests (proxy/tests/kernel_tls.rs) on a
# kernel that has TLS offload, which the CI machine's kernel lacks: Debian's
# cloud kernel (with tls.ko) boots under qemu, by software emulation, from
# an initramfs holding busybox, the kernel's TLS and crypto modules,
# glance-stream and the test binary (each at the path it was built at).
# The tests' output and exit status come back on the serial console.
#
#   scripts/kernel-tls-vm.sh install   # qemu, busybox, cpio, the kernel package
#   scripts/kernel-tls-vm.sh run       # build the tests, boot, run them (exit status: theirs)
#
# Environment: PROFILE (cargo profile, default ci), VM_TIMEOUT (seconds, default 900).
set -euo pipefail
cd "$(dirname "$0")/.."

PROFILE=${PROFILE:-ci}
VM_TIMEOUT=${VM_TIMEOUT:-900}
work=$PWD/target/kernel-tls-vm

install() {
  local need=()
  command -v qemu-system-x86_64 >/dev/null 2>&1 || need+=(qemu-system-x86)
  [ -x /bin/busybox ] || need+=(busybox-static)
  command -v cpio >/dev/null 2>&1 || need+=(cpio)
  if [ ${#need[@]} -gt 0 ]; then
    apt-get update -q
    DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends "${need[@]}"
  fi
  if ls "$work"/kernel/boot/vmlinuz-* >/dev/null 2>&1; then
    return
  fi
  # The kernel the metapackage points at today (its tls.ko is a module).
  local pkg
  pkg=$(apt-cache depends linux-image-cloud-amd64 2>/dev/null |
    awk '/Depends: linux-image-[0-9]/ { print $2; exit }')
  if [ -z "$pkg" ]; then
    apt-get update -q
    pkg=$(apt-cache depends linux-image-cloud-amd64 |
      awk '/Depends: linux-image-[0-9]/ { print $2; exit }')
  fi
  if [ -z "$pkg" ]; then
    echo "kernel-tls-vm: no linux-image-*-cloud-amd64 package is known to apt" >&2
    exit 1
  fi
  mkdir -p "$work/deb"
  rm -f "$work"/deb/*.deb
  # Lists that are there but stale can name a kernel the mirror no longer
  # has: update them and try once more.
  if ! (cd "$work/deb" && apt-get download -q "$pkg"); then
    apt-get update -q
    (cd "$work/deb" && apt-get download -q "$pkg")
  fi
  local deb
  deb=$(ls "$work"/deb/"$pkg"_*.deb 2>/dev/null | head -n 1)
  if [ -z "$deb" ]; then
    echo "kernel-tls-vm: apt-get download $pkg left no .deb in $work/deb" >&2
    exit 1
  fi
  rm -rf "$work/kernel"
  dpkg-deb -x "$deb" "$work/kernel"
  if ! ls "$work"/kernel/boot/vmlinuz-* >/dev/null 2>&1; then
    echo "kernel-tls-vm: $deb holds no kernel image" >&2
    exit 1
  fi
}

# Copies a file into the initramfs at its own absolute path.
place() {
  mkdir -p "$root$(dirname "$1")"
  cp -L "$1" "$root$1"
}

# Copies an executable and the shared libraries it loads.
place_with_libs() {
  place "$1"
  ldd "$1" | awk '/=> \// { print $3 } /^[ \t]*\// { print $1 }' | while read -r lib; do
    place "$lib"
  done
}

run() {
  install
  echo "building the kernel-TLS tests (profile $PROFILE)"
  local built tests server
  # Compiler errors go to the terminal; the artifacts' paths come from the
  # JSON messages (wherever CARGO_TARGET_DIR points). --workspace: the
  # features of scripts/test-all.sh's build, so nothing is built again.
  built=$(cargo test --workspace --profile "$PROFILE" --test kernel_tls --no-run \
    --message-format=json-render-diagnostics |
    python3 -c 'import json, sys
for line in sys.stdin:
    m = json.loads(line)
    if m.get("reason") != "compiler-artifact" or not m.get("executable"):
        continue
    if m["target"]["name"] in ("kernel_tls", "glance-stream"):
        print(m["target"]["name"], m["executable"])')
  tests=$(echo "$built" | awk '$1 == "kernel_tls" { print $2 }')
  server=$(echo "$built" | awk '$1 == "glance-stream" { print $2 }')
  if [ ! -x "$tests" ] || [ ! -x "$server" ]; then
    echo "kernel-tls-vm: the build gave no test binary or no glance-stream binary: $built" >&2
    exit 1
  fi

  local kernel_dir version
  kernel_dir=$(echo "$work"/kernel/lib/modules/*)
  version=$(basename "$kernel_dir")
  root=$work/root
  rm -rf "$root"
  mkdir -p "$root"/{bin,sbin,proc,sys,dev,tmp,etc}
  cp /bin/busybox "$root/bin/busybox"
  place_with_libs "$tests"
  place_with_libs "$server"
  # The TLS layer and the crypto it asks for (AES-GCM, ChaCha20-Poly1305).
  local modules=$root/lib/modules/$version
  mkdir -p "$modules/kernel"
  for d in net/tls crypto arch/x86/crypto lib; do
    mkdir -p "$modules/kernel/$d"
    cp -r "$kernel_dir/kernel/$d/." "$modules/kernel/$d/"
  done
  cp "$kernel_dir"/modules.order "$kernel_dir"/modules.builtin* "$modules/"
  cat >"$root/init" <<EOF
#!/bin/busybox sh
/bin/busybox --install -s /bin
mount -t proc proc /proc
mount -t sysfs sys /sys
mount -t devtmpfs dev /dev
# A scratch directory of its own: /tmp may hold the binaries themselves
# (they sit at the paths they were built at).
mkdir -p /scratch
mount -t tmpfs scratch /scratch
ln -s /bin/busybox /sbin/modprobe
depmod
for m in tls gcm ctr ghash-generic aesni-intel chacha20poly1305 chacha-x86_64 poly1305-x86_64; do
  modprobe \$m || echo "kernel-tls-vm: module \$m not loaded"
done
ip link set lo up
echo "kernel-tls-vm: kernel \$(uname -r), TCP upper-layer protocols: \$(cat /proc/sys/net/ipv4/tcp_available_ulp)"
cd /scratch
HOME=/scratch TMPDIR=/scratch RUST_BACKTRACE=1 $tests --include-ignored --test-threads=1
echo "kernel-tls-vm: tests exited \$?"
poweroff -f
EOF
  chmod +x "$root/init"
  (cd "$root" && find . | cpio -o -H newc --quiet >"$work/initramfs.cpio")
  local log=$work/console.log
  echo "booting $version under qemu (software emulation); console: $log"
  timeout "$VM_TIMEOUT" qemu-system-x86_64 -machine q35 -cpu max -smp 2 -m 2048 \
    -nographic -no-reboot -kernel "$work"/kernel/boot/vmlinuz-"$version" \
    -initrd "$work/initramfs.cpio" -append "console=ttyS0 quiet panic=-1" \
    </dev/null >"$log" 2>&1 || true
  # The console carries terminal escapes and carriage returns.
  tr -d '\r' <"$log" | sed -n '/kernel-tls-vm:/,$p'
  if grep -q "kernel-tls-vm: tests exited 0" "$log"; then
    echo "kernel TLS tests passed"
  else
    echo "kernel TLS tests failed (or the VM did not finish within ${VM_TIMEOUT}s)" >&2
    exit 1
  fi
}

case "${1:-run}" in
  install) install ;;
  run) run ;;
  *) echo "usage: $0 install|run" >&2; exit 2 ;;
esac
