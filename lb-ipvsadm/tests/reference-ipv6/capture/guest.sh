# Runs inside the VM (cargo xtask vm --kernel 6.1, see run.sh): $1 is the
# text of ../commands.sh, $2 the text of traffic.py. Writes a base64 tar of the
# captures to stdout between markers; progress goes to stderr.
exec 3>&1 1>&2
set -x
out=/tmp/out; mkdir -p $out
uname -r > $out/uname.txt
for m in ip_vs ip_vs_rr ip_vs_wrr ip_vs_wlc ip_vs_sh ip_vs_mh; do modprobe $m || echo "modprobe $m failed"; done
ip link set lo up
ip addr add 10.0.0.1/24 dev lo
for a in 1 2 3 4 10 11 12 20 ffff:ffff:ffff:ffff:ffff:fff1 ffff:ffff:ffff:ffff:ffff:fff2; do
  case $a in *:*) ip -6 addr add 2001:db8:$a/128 dev lo ;; *) ip -6 addr add 2001:db8::$a/128 dev lo ;; esac
done
ip -6 addr show dev lo
printf '%s\n' "$1" > /tmp/commands.sh
sh -x /tmp/commands.sh || { echo "commands.sh failed: $?"; exit 1; }
ipvsadm -v > $out/version.txt 2>&1
ipvsadm -S -n > $out/S-n.txt
ipvsadm -S > $out/S.txt
printf '%s\n' "$2" > /tmp/traffic.py
python3 /tmp/traffic.py /tmp/ready &
tp=$!
for i in $(seq 60); do [ -e /tmp/ready ] && break; sleep 1; done
sleep 3   # one or two rate-estimator ticks (2 s)
ipvsadm -L -n > $out/L-n.txt
ipvsadm -L -n --nosort > $out/L-n-nosort.txt
ipvsadm -L -n --stats > $out/L-n-stats.txt
ipvsadm -L -n --stats --exact > $out/L-n-stats-exact.txt
ipvsadm -L -n --rate > $out/L-n-rate.txt
ipvsadm -L -n --persistent-conn > $out/L-n-persistent-conn.txt
ipvsadm -L -n --thresholds > $out/L-n-thresholds.txt
ipvsadm -L -n --tun-info > $out/L-n-tun-info.txt 2>&1
ipvsadm -L -n -c > $out/L-n-c.txt
ipvsadm -L -n -c --persistent-conn > $out/L-n-c-persistent-conn.txt 2>&1
ipvsadm -l -n -t [2001:db8::1]:80 > $out/l-n-t-ipv6.txt
ipvsadm -l -n -u [2001:db8::1]:53 > $out/l-n-u-ipv6.txt
ipvsadm -l -n -f 1 > $out/l-n-f-1.txt
ipvsadm -l -n -f 2 -6 > $out/l-n-f-2.txt
ipvsadm -L --timeout > $out/L-timeout.txt
cat /proc/net/ip_vs > $out/proc-net-ip_vs.txt
cat /proc/net/ip_vs_conn > $out/proc-net-ip_vs_conn.txt
timeout 60 ipvsadm -L > $out/L.txt; echo "ipvsadm -L: $?"
timeout 60 ipvsadm -L -c > $out/L-c.txt; echo "ipvsadm -L -c: $?"
kill $tp
ls -la $out
echo '=====BEGIN TAR=====' >&3
tar -C $out -cf - . | base64 >&3
echo '=====END TAR=====' >&3
