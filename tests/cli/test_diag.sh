#!/usr/bin/env bash
# `llmfs diag`: every line is four words and a known verdict, every check answers, and a
# machine fabricated under LLMFS_SYSROOT gets the verdicts its files call for.
# Usage: test_diag.sh PATH-TO-LLMFS REPO-ROOT
set -u
LLMFS=$1
fails=0
fail() { echo "FAIL: $*"; fails=$((fails + 1)); }
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT

# Prints the lines that break the format: not four words before " # ", an unknown
# verdict, or "unknown" without a reason.
bad_lines() {
    awk '{ line = $0; reason = index(line, " # "); head = reason ? substr(line, 1, reason - 1) : line;
           n = split(head, f, " ");
           if (n != 4 || (f[4] != "ok" && f[4] != "warn" && f[4] != "unknown") || (f[4] == "unknown" && !reason))
               print }' "$1"
}

checks="mem_speed cpu_governor cpu_epp cpu_freq cpu_hybrid model_cpus vram_free pcie thermal top_cpu
        swap_mount swap_generation swappiness memlock transparent_hugepage power_profiles_daemon"

# this machine
"$LLMFS" diag >"$tmp/real" 2>"$tmp/err" || fail "llmfs diag exited $?: $(cat "$tmp/err")"
[ -s "$tmp/err" ] && fail "llmfs diag wrote to stderr: $(cat "$tmp/err")"
[ -z "$(bad_lines "$tmp/real")" ] || fail "malformed lines: $(bad_lines "$tmp/real")"
for c in $checks; do
    grep -Eq "^$c[ .]" "$tmp/real" || fail "no line for $c"
done

# a fabricated machine: a hybrid CPU on powersave, a hot zone, a Gen1 link, THP off
R=$tmp/root
mkdir -p "$R/sys/devices/system/cpu/cpufreq/policy0" "$R/sys/devices/cpu_core" "$R/sys/devices/cpu_atom" \
    "$R/sys/class/thermal/thermal_zone0" "$R/sys/bus/pci/devices/0000:01:00.0" \
    "$R/sys/kernel/mm/transparent_hugepage" "$R/proc/sys/vm"
P=$R/sys/devices/system/cpu/cpufreq/policy0
echo powersave >"$P/scaling_governor"
echo power >"$P/energy_performance_preference"
echo 4000000 >"$P/cpuinfo_max_freq"
echo 2000000 >"$P/scaling_max_freq"
echo 1900000 >"$P/scaling_cur_freq"
echo 0-7 >"$R/sys/devices/cpu_core/cpus"
echo 8-15 >"$R/sys/devices/cpu_atom/cpus"
Z=$R/sys/class/thermal/thermal_zone0
echo 97000 >"$Z/temp"
echo passive >"$Z/trip_point_0_type"
echo 90000 >"$Z/trip_point_0_temp"
D=$R/sys/bus/pci/devices/0000:01:00.0
echo 0x030000 >"$D/class"
echo 0x10de >"$D/vendor"
echo "2.5 GT/s PCIe" >"$D/current_link_speed"
echo "16.0 GT/s PCIe" >"$D/max_link_speed"
echo 16 >"$D/current_link_width"
echo 16 >"$D/max_link_width"
echo "always madvise [never]" >"$R/sys/kernel/mm/transparent_hugepage/enabled"
echo 100 >"$R/proc/sys/vm/swappiness"
LLMFS_SYSROOT=$R "$LLMFS" diag >"$tmp/fake" 2>"$tmp/err" || fail "llmfs diag (fabricated) exited $?"
[ -z "$(bad_lines "$tmp/fake")" ] || fail "malformed lines: $(bad_lines "$tmp/fake")"
want() {
    grep -q "^$1 $2\( \|$\)" "$tmp/fake" || fail "want '$1 $2', got '$(grep "^$1 " "$tmp/fake")'"
}
want cpu_governor.policy0 "powersave performance warn"
want cpu_epp.policy0 "power performance warn"
want cpu_freq "1900MHz 4000MHz warn"
want cpu_hybrid "p=0-7;e=8-15 - ok"
want thermal.zone0 "97C <90C warn"
want pcie.0000:01:00.0 "gen1x16 gen4x16 warn"
want transparent_hugepage "never always|madvise warn"
want swappiness "100 <=10 warn"
want mem_speed "- rated unknown"
# fixed: the verdicts follow the files
echo performance >"$P/scaling_governor"
echo "16.0 GT/s PCIe" >"$D/current_link_speed"
LLMFS_SYSROOT=$R "$LLMFS" diag >"$tmp/fake" 2>/dev/null
want cpu_governor.policy0 "performance performance ok"
want pcie.0000:01:00.0 "gen4x16 gen4x16 ok"

# no arguments are taken
"$LLMFS" diag extra >/dev/null 2>"$tmp/err" && fail "diag with an argument succeeded"
[ "$(wc -l <"$tmp/err")" = 1 ] || fail "not a one-line error: $(cat "$tmp/err")"

if [ "$fails" -gt 0 ]; then
    echo "test_diag.sh: $fails failure(s)"
    exit 1
fi
echo "test_diag.sh: ok"
