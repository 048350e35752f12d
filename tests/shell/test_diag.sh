#!/usr/bin/env bash
# The diag file: four words per line, known verdicts, a verdict for every check; a
# machine fabricated under LLMFS_SYSROOT gets one warning per check; model warnings show
# in stats, error and diag, and go when the setting is fixed.
. "$(dirname "$0")/lib.sh" "$@"

R=$T/root
mkdir -p "$R/sys/devices/system/cpu/cpufreq/policy0" "$R/sys/devices/cpu_core" "$R/sys/devices/cpu_atom" \
    "$R/sys/class/thermal/thermal_zone0" "$R/sys/bus/pci/devices/0000:01:00.0" \
    "$R/sys/kernel/mm/transparent_hugepage" "$R/proc/sys/vm" "$R/proc/77" "$R/var/lib/power-profiles-daemon" \
    "$R/sys/firmware/dmi/entries/17-0" "$R/proc/self"
P=$R/sys/devices/system/cpu/cpufreq/policy0
echo powersave >"$P/scaling_governor"; echo power >"$P/energy_performance_preference"
echo 4000000 >"$P/cpuinfo_max_freq"; echo 2000000 >"$P/scaling_max_freq"; echo 1900000 >"$P/scaling_cur_freq"
echo 0 >"$R/sys/devices/cpu_core/cpus"; echo 1 >"$R/sys/devices/cpu_atom/cpus"
Z=$R/sys/class/thermal/thermal_zone0
echo 97000 >"$Z/temp"; echo passive >"$Z/trip_point_0_type"; echo 90000 >"$Z/trip_point_0_temp"
D=$R/sys/bus/pci/devices/0000:01:00.0
echo 0x030000 >"$D/class"; echo 0x10de >"$D/vendor"; echo 16 >"$D/current_link_width"; echo 16 >"$D/max_link_width"
echo "2.5 GT/s PCIe" >"$D/current_link_speed"; echo "16.0 GT/s PCIe" >"$D/max_link_speed"
echo "always madvise [never]" >"$R/sys/kernel/mm/transparent_hugepage/enabled"
echo 100 >"$R/proc/sys/vm/swappiness"
printf 'pswpin 10\npswpout 10\n' >"$R/proc/vmstat"
printf 'MemTotal: 16000000 kB\nMemAvailable: 8000000 kB\n' >"$R/proc/meminfo"
echo "1000.0 0" >"$R/proc/uptime"
echo "77 (burner) R 1 1 1 0 -1 0 0 0 0 0 90000 0 0 0 20 0 1 0 0 1 1" >"$R/proc/77/stat"
echo power-profiles- >"$R/proc/77/comm"
printf '[State]\nProfile=power-saver\n' >"$R/var/lib/power-profiles-daemon/state.ini"
echo "Max locked memory 65536 65536 bytes" >"$R/proc/self/limits"
# SMBIOS type 17: 16 GiB, locator "A1", rated 5600, configured 4800 MT/s
printf '\021\042\000\000\000\000\000\000\000\000\000\000\000\100\000\000\001\000\000\000\000\340\025\000\000\000\000\000\000\000\000\000\300\022A1\000\000' \
    >"$R/sys/firmware/dmi/entries/17-0/raw"

# the real machine first: the format, and a verdict for every check
llmfs_mount
cat "$MNT/diag" >"$T/real" || fail "cannot read diag"
bad=$(awk '{ r = index($0, " # "); h = r ? substr($0, 1, r - 1) : $0; n = split(h, f, " ");
             if (n != 4 || (f[4] != "ok" && f[4] != "warn" && f[4] != "unknown") || (f[4] == "unknown" && !r)) print }' "$T/real")
[ -z "$bad" ] || fail "malformed diag lines: $bad"
for c in mem_speed cpu_governor cpu_epp cpu_freq cpu_hybrid model_cpus vram_free pcie thermal top_cpu \
    swap_mount swap_generation swappiness memlock transparent_hugepage power_profiles_daemon; do
    grep -Eq "^$c[ .]" "$T/real" || fail "no diag line for $c"
done
"$LLMFS" diag | cut -d' ' -f1 | sort >"$T/cli"; cut -d' ' -f1 "$T/real" | sort >"$T/mnt_checks"
cmp -s "$T/cli" "$T/mnt_checks" || fail "llmfs diag and the diag file list other checks"
pass "diag: four words per line, a verdict for every check"
llmfs_unmount

# the fabricated machine: one warning per check
LLMFS_SYSROOT=$R llmfs_mount
put "$MNT/ctl" "load m $MODELS/qwen3-tiny-q4_k.gguf cpu_affinity=0-1 threads=2 ctx=256 mlock=on"
cat "$MNT/diag" >"$T/fake"
want() { grep -q "^$1 $2\( \|\$\)" "$T/fake" || fail "want '$1 $2': $(grep "^$1" "$T/fake")"; }
want mem_speed.A1 "4800MT/s 5600MT/s warn"
want cpu_governor.policy0 "powersave performance warn"
want cpu_epp.policy0 "power performance warn"
want cpu_freq "1900MHz 4000MHz warn"
want model_cpus.m "0-1 p-cores warn"
want pcie.0000:01:00.0 "gen1x16 gen4x16 warn"
want thermal.zone0 "97C <90C warn"
want top_cpu.1 "burner/77:90% <50% warn"
want swappiness "100 <=10 warn"
grep -q "^memlock 0MiB >=[0-9]*MiB warn" "$T/fake" || fail "memlock: $(grep ^memlock "$T/fake")"
want transparent_hugepage "never always|madvise warn"
want power_profiles_daemon "active:power-saver inactive|performance warn"
printf 'pswpin 50\npswpout 10\n' >"$R/proc/vmstat"
grep -q "^swap_mount 40 0 warn" "$MNT/diag" || fail "swap_mount: $(grep ^swap_mount "$MNT/diag")"
pass "diag: fabricated faults warn"

# model warnings in stats, error and diag; gone once the setting is fixed
grep -q "^warning .*set cpu_affinity p-cores" "$MNT/m/stats" || fail "no E-core warning in stats: $(cat "$MNT/m/stats")"
grep -q "set cpu_affinity p-cores" "$MNT/m/error" || fail "no E-core warning in error: $(cat "$MNT/m/error")"
grep -q "^warning m none warn # .*set cpu_affinity p-cores" "$MNT/diag" || fail "no E-core warning in diag"
put "$MNT/ctl" "unload m"
put "$MNT/ctl" "load m $MODELS/qwen3-tiny-q4_k.gguf ctx=256 profile=mtp ctx=256 cache_type_k=q8_0"
grep -q "set cache_type_k f16" "$MNT/m/stats" || fail "no speculative-KV warning in stats"
grep -q "set cache_type_k f16" "$MNT/m/error" || fail "no speculative-KV warning in error"
grep -q "^cpus 0$" "$MNT/m/stats" || fail "stats does not show the P-core the threads use"
put "$MNT/m/ctl" "cache_type_k f16"
grep -q "cache_type_k" "$MNT/m/stats" && fail "the warning stays after cache_type_k f16"
put "$MNT/m/ctl" "parallel 2"
grep -q "set parallel 1" "$MNT/m/stats" || fail "no parallel warning on a single-user profile"
put "$MNT/m/ctl" "parallel 1"
grep -q "set parallel 1" "$MNT/m/error" && fail "the parallel warning stays in error"
pass "model warnings come and go with their settings"
llmfs_unmount
