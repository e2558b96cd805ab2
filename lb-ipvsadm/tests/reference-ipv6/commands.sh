#!/bin/sh
# The ipvsadm commands that built the table captured in this directory,
# run in this order on an empty table (ipvsadm -C) inside Debian's 6.1 kernel.
set -e
ipvsadm -C

# One IPv4 service, to show where IPv4 sorts among IPv6 and FWM services.
ipvsadm -A -t 10.0.0.100:80 -s rr
ipvsadm -a -t 10.0.0.100:80 -r 10.0.0.10:80 -g -w 1
ipvsadm -a -t 10.0.0.100:80 -r 10.0.0.11:80 -g -w 1

# IPv6 TCP: DR, a Masq server with a long address and port 65535 (column
# overflow), a tunnel server, thresholds on one server.
ipvsadm -A -t [2001:db8::1]:80 -s wrr
ipvsadm -a -t [2001:db8::1]:80 -r [2001:db8::10]:80 -g -w 2
ipvsadm -a -t [2001:db8::1]:80 -r [2001:db8::11]:80 -g -w 1 -x 100 -y 50
ipvsadm -a -t [2001:db8::1]:80 -r [2001:db8:ffff:ffff:ffff:ffff:ffff:fff1]:65535 -m -w 1
ipvsadm -a -t [2001:db8::1]:80 -r [2001:db8::12]:80 -i -w 1

# IPv6 persistent service with a /64 persistence mask.
ipvsadm -A -t [2001:db8::2]:443 -s rr -p 300 -M 64
ipvsadm -a -t [2001:db8::2]:443 -r [2001:db8::10]:443 -g -w 1
ipvsadm -a -t [2001:db8::2]:443 -r [2001:db8::11]:443 -g -w 1

# IPv6 UDP.
ipvsadm -A -u [2001:db8::1]:53 -s rr
ipvsadm -a -u [2001:db8::1]:53 -r [2001:db8::10]:53 -g -w 1
ipvsadm -a -u [2001:db8::1]:53 -r [2001:db8::11]:5353 -m -w 1

# IPv6 every-port service (port 0 needs -p). A bracketed IPv6 real server
# needs a port ('-r [2001:db8::10]' is refused: "illegal real server
# address[:port] specified"); bare or with :0 it takes the service's port.
ipvsadm -A -t [2001:db8::3]:0 -s sh -p 600
ipvsadm -a -t [2001:db8::3]:0 -r 2001:db8::10 -g -w 1
ipvsadm -a -t [2001:db8::3]:0 -r [2001:db8::11]:80 -g -w 1

# IPv6 service with the longest address and port: service-line overflow.
ipvsadm -A -u [2001:db8:ffff:ffff:ffff:ffff:ffff:fff1]:65535 -s mh -b mh-port
ipvsadm -a -u [2001:db8:ffff:ffff:ffff:ffff:ffff:fff1]:65535 -r [2001:db8:ffff:ffff:ffff:ffff:ffff:fff2]:65535 -g -w 1

# Firewall-mark services: IPv4 persistent, IPv6, IPv4 with a mask, IPv6 with a mask.
# Adding to an IPv6 FWM service needs -6 again (without it ipvsadm looks for
# an IPv4 FWM service: "Different address family is allowed only for
# tunneling servers").
ipvsadm -A -f 1 -s wlc -p 300
ipvsadm -a -f 1 -r 10.0.0.10 -g -w 2
ipvsadm -a -f 1 -r 10.0.0.11 -g -w 1
ipvsadm -A -f 2 -6 -s rr
ipvsadm -a -f 2 -6 -r 2001:db8::10 -g -w 1
ipvsadm -a -f 2 -6 -r [2001:db8::11]:0 -i -w 1
ipvsadm -A -f 3 -s rr -p 60 -M 255.255.255.0
ipvsadm -a -f 3 -r 10.0.0.12 -g -w 1
ipvsadm -A -f 4 -6 -s wrr -p 120 -M 64
ipvsadm -a -f 4 -6 -r 2001:db8::10 -g -w 3
