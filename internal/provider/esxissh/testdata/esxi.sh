# esxi.sh — emulates the ESXi 7/8 shell commands the esxissh provider sends,
# reproducing their documented output formats (vim-cmd vmsvc/getallvms table,
# power.getstate's "Retrieved runtime info", get.guest's (vim.vm.GuestInfo)
# dump, vim fault printouts such as vim.fault.ToolsUnavailable and
# vim.fault.InvalidPowerState, esxcli maintenanceMode's Enabled/Disabled).
# It runs under the test sshd's ForceCommand and NEVER runs a real command:
# the client's command is matched as a string and anything unknown answers
# "not found" with status 127, like ash on ESXi.
#
# State lives under $ESXI_STATE:
#   vms/<vmid>/{name,file,guestos,version,annotation,power,mode}
#     power: on | off | suspended | stopping (shutdown accepted; off at the
#            next getstate)
#     mode:  normal | deaf (accepts power.shutdown, stays on) | notools
#   host/maint            Enabled | Disabled
#   deny/<vmid>           next power.off of <vmid> fails with NoPermission
#   garbage/<key>         printed instead of the real answer; <key> is the
#                         command with every byte outside [A-Za-z0-9] as _
#   slow/<key>            seconds to sleep before answering
#   drop/<key>            the connection drops instead of answering (once)
set -u
S="$ESXI_STATE"
cmd="$SSH_ORIGINAL_COMMAND"
# A host that is off answers nothing: power-off stops the listener, but a
# connection accepted just before (on a loaded machine) must not find it up.
if [ "$(cat "$S/host/power" 2>/dev/null)" = off ]; then kill -9 "$PPID"; exit 1; fi
# A list "a ; b ; c" (what ESXi's ash runs in sequence) is answered part by
# part; its status is the last part's.
case "$cmd" in
*" ; "*)
	rest=$cmd; rc=0
	while :; do
		part=${rest%% ; *}
		SSH_ORIGINAL_COMMAND=$part /bin/sh "$0"; rc=$?
		[ "$part" = "$rest" ] && break
		rest=${rest#* ; }
	done
	exit $rc
	;;
"echo @@sundown:"*)
	echo "${cmd#echo }"
	exit 0
	;;
esac

# Fault injection, looked up only when a test asked for some (saves forks).
set -- "$S"/garbage/* "$S"/slow/* "$S"/drop/*
if [ -e "$1" ] || [ -e "${2:-}" ] || [ -e "${3:-}" ]; then
	key=$(printf '%s' "$cmd" | tr -c 'A-Za-z0-9' '_')
	if [ -f "$S/drop/$key" ]; then rm -f "$S/drop/$key"; kill -9 "$PPID"; exit 1; fi
	if [ -f "$S/slow/$key" ]; then sleep "$(cat "$S/slow/$key")"; fi
	if [ -f "$S/garbage/$key" ]; then cat "$S/garbage/$key"; exit 0; fi
fi
get() { read -r v < "$1" || v=; }

put() { printf '%s\n' "$2" > "$1.tmp.$$" && mv "$1.tmp.$$" "$1"; }

notfound() {
	echo "Unable to find a VM corresponding to \"$1\""
	exit 1
}

vmdir() {
	case "$1" in ''|*[!0-9]*) notfound "$1" ;; esac
	[ -d "$S/vms/$1" ] || notfound "$1"
	D="$S/vms/$1"
}

statename() {
	case "$1" in
	on|stopping) echo "Powered on" ;;
	off) echo "Powered off" ;;
	suspended) echo "Suspended" ;;
	esac
}
apiname() {
	case "$1" in
	on|stopping) echo poweredOn ;;
	off) echo poweredOff ;;
	suspended) echo suspended ;;
	esac
}

invalidpower() { # $1 requested api state, $2 current internal state
	cat <<EOT
(vim.fault.InvalidPowerState) {
   faultCause = (vmodl.MethodFault) null,
   faultMessage = <unset>,
   requestedState = "$1",
   existingState = "$(apiname "$2")",
   msg = "The attempted operation cannot be performed in the current state ($(statename "$2"))."
}
EOT
	exit 1
}



case "$cmd" in
"vim-cmd vmsvc/getallvms")
	# Columns are padded to the widest value, as vim-cmd does.
	ids=$(ls "$S/vms" 2>/dev/null | sort -n)
	{
		for id in $ids; do
			d="$S/vms/$id"
			get "$d/name"; n=$v; get "$d/file"; f=$v; get "$d/guestos"; g=$v; get "$d/version"
			printf '%s\t%s\t%s\t%s\t%s\t' "$id" "$n" "$f" "$g" "$v"
			# annotation: newlines kept, marked for awk
			if [ -s "$d/annotation" ]; then awk 'NR>1{printf "\001"}{printf "%s",$0}' "$d/annotation"; fi
			printf '\n'
		done
	} | awk -F '\t' '
	{ n++; for (i = 1; i <= 6; i++) { v[n, i] = $i; if (length($i) > w[i]) w[i] = length($i) } }
	END {
		split("Vmid Name File Guest_OS Version Annotation", h, " ")
		h[4] = "Guest OS"
		for (i = 1; i <= 5; i++) if (length(h[i]) > w[i]) w[i] = length(h[i])
		printf "%-" w[1] "s   %-" w[2] "s   %-" w[3] "s   %-" w[4] "s   %-" w[5] "s   %s\n", h[1], h[2], h[3], h[4], h[5], h[6]
		for (r = 1; r <= n; r++) {
			a = v[r, 6]; gsub("\001", "\n", a)
			printf "%-" w[1] "s   %-" w[2] "s   %-" w[3] "s   %-" w[4] "s   %-" w[5] "s   %s\n", v[r, 1], v[r, 2], v[r, 3], v[r, 4], v[r, 5], a
		}
	}'
	;;
"vim-cmd vmsvc/power.getstate "*)
	vmdir "${cmd#vim-cmd vmsvc/power.getstate }"
	get "$D/power"; p=$v
	if [ "$p" = stopping ]; then put "$D/power" off; fi
	echo "Retrieved runtime info"
	statename "$p"
	;;
"vim-cmd vmsvc/get.guest "*)
	vmdir "${cmd#vim-cmd vmsvc/get.guest }"
	get "$D/power"; p=$v; get "$D/mode"; mode=$v
	if [ "$p" = on ] || [ "$p" = stopping ]; then
		if [ "$mode" = notools ]; then ts=toolsNotRunning; trs=guestToolsNotRunning; else ts=toolsOk; trs=guestToolsRunning; fi
	else
		ts=toolsNotRunning; trs=guestToolsNotRunning
	fi
	get "$D/guestos"; gos=$v
	if [ "$trs" = guestToolsRunning ]; then gst=running; else gst=notRunning; fi
	printf '%s\n' \
		"Guest information:" \
		"" \
		"(vim.vm.GuestInfo) {" \
		"   toolsStatus = \"$ts\"," \
		"   toolsVersionStatus = \"guestToolsCurrent\"," \
		"   toolsVersionStatus2 = \"guestToolsCurrent\"," \
		"   toolsRunningStatus = \"$trs\"," \
		"   toolsVersion = \"12416\"," \
		"   toolsInstallType = \"guestToolsTarball\"," \
		"   guestId = \"$gos\"," \
		"   guestFamily = \"linuxGuest\"," \
		"   guestFullName = \"Other Linux (64-bit)\"," \
		"   hostName = <unset>," \
		"   ipAddress = <unset>," \
		"   net = (vim.vm.GuestInfo.NicInfo) [" \
		"   ]," \
		"   guestState = \"$gst\"," \
		"   appHeartbeatStatus = \"appStatusGray\"," \
		"   guestKernelCrashed = false," \
		"   appState = \"none\"," \
		"   guestOperationsReady = false," \
		"   interactiveGuestOperationsReady = false," \
		"   guestStateChangeSupported = true," \
		"   generationInfo = <unset>" \
		"}"
	;;
"vim-cmd vmsvc/get.config "*)
	# An excerpt: vim-cmd prints the whole vim.vm.ConfigInfo; the top-level
	# uuid is the BIOS UUID, nested ones (disk backings) are indented deeper.
	vmdir "${cmd#vim-cmd vmsvc/get.config }"
	get "$D/name"; n=$v; get "$D/version"; ver=$v; get "$D/guestos"; gos=$v
	u=; if [ -f "$D/uuid" ]; then get "$D/uuid"; u=$v; fi
	printf '%s\n' \
		"Configuration:" \
		"" \
		"(vim.vm.ConfigInfo) {" \
		"   changeVersion = \"2024-05-01T10:00:00.000000Z\"," \
		"   modified = \"1970-01-01T00:00:00Z\"," \
		"   name = \"$n\"," \
		"   guestFullName = \"Other Linux (64-bit)\"," \
		"   version = \"$ver\"," \
		"   uuid = \"$u\"," \
		"   createDate = \"2024-05-01T09:00:00.000000Z\"," \
		"   instanceUuid = \"52a1b2c3-d4e5-f607-1829-3a4b5c6d7e8f\"," \
		"   template = false," \
		"   guestId = \"$gos\"," \
		"   hardware = (vim.vm.VirtualHardware) {" \
		"      numCPU = 2," \
		"      device = (vim.vm.device.VirtualDevice) [" \
		"         (vim.vm.device.VirtualDisk) {" \
		"            backing = (vim.vm.device.VirtualDisk.FlatVer2BackingInfo) {" \
		"               uuid = \"6000C29a-0000-0000-0000-000000000001\"," \
		"            }," \
		"         }" \
		"      ]," \
		"   }," \
		"}"
	;;
"vim-cmd vmsvc/power.shutdown "*)
	vmdir "${cmd#vim-cmd vmsvc/power.shutdown }"
	get "$D/power"; p=$v; get "$D/mode"; mode=$v
	[ "$p" = on ] || [ "$p" = stopping ] || invalidpower poweredOn "$p"
	if [ "$mode" = notools ]; then
		cat <<EOT
(vim.fault.ToolsUnavailable) {
   faultCause = (vmodl.MethodFault) null,
   faultMessage = <unset>,
   msg = "Cannot complete operation because VMware Tools is not running in this virtual machine."
}
EOT
		exit 1
	fi
	[ "$mode" = deaf ] || put "$D/power" stopping
	;;
"vim-cmd vmsvc/power.off "*)
	id=${cmd#vim-cmd vmsvc/power.off }
	vmdir "$id"
	if [ -f "$S/deny/$id" ]; then
		rm -f "$S/deny/$id"
		cat <<EOT
(vim.fault.NoPermission) {
   faultCause = (vmodl.MethodFault) null,
   faultMessage = <unset>,
   object = 'vim.VirtualMachine:$id',
   privilegeId = "VirtualMachine.Interact.PowerOff",
   msg = "Permission to perform this operation was denied."
}
EOT
		exit 1
	fi
	get "$D/power"; p=$v
	[ "$p" != off ] || invalidpower poweredOn "$p"
	echo "Powering off VM:"
	put "$D/power" off
	;;
"vim-cmd vmsvc/power.on "*)
	vmdir "${cmd#vim-cmd vmsvc/power.on }"
	get "$D/power"; p=$v
	[ "$p" = off ] || [ "$p" = suspended ] || invalidpower poweredOff "$p"
	echo "Powering on VM:"
	put "$D/power" on
	;;
"vim-cmd vmsvc/power.suspend "*)
	vmdir "${cmd#vim-cmd vmsvc/power.suspend }"
	get "$D/power"; p=$v
	[ "$p" = on ] || [ "$p" = stopping ] || invalidpower poweredOn "$p"
	echo "Suspending VM:"
	put "$D/power" suspended
	;;
"vim-cmd hostsvc/autostartmanager/autostop")
	;;
"esxcli system maintenanceMode get")
	get "$S/host/maint"; echo "$v"
	;;
"esxcli system maintenanceMode set --enable true"|"esxcli system maintenanceMode set --enable true --timeout "*)
	get "$S/host/maint"; if [ "$v" = Enabled ]; then echo "Maintenance mode is already enabled."; exit 1; fi
	put "$S/host/maint" Enabled
	;;
"esxcli system maintenanceMode set --enable false")
	get "$S/host/maint"; if [ "$v" = Disabled ]; then echo "Maintenance mode is already disabled."; exit 1; fi
	put "$S/host/maint" Disabled
	;;
'esxcli system shutdown poweroff --reason "sundown: power failure"'|"poweroff")
	get "$S/host/maint"
	if [ "$cmd" != poweroff ] && [ "$v" != Enabled ]; then
		echo "Unable to power off the host: the host is not in maintenance mode."
		exit 1
	fi
	put "$S/host/power" off
	# The host goes down: the listener stops and this connection drops.
	get "$SSHD_PIDFILE"
	kill -TERM "$v" 2>/dev/null
	kill -9 "$PPID"
	;;
*)
	echo "sh: ${cmd%% *}: not found" >&2
	exit 127
	;;
esac
