// Package apcupsd reads a UPS's state from apcupsd's Network Information
// Server (NIS), the service apcaccess(8) talks to, and translates it into the
// ups.status tokens and variables NUT uses, so the rest of sundown treats an
// apcupsd UPS like a NUT one.
//
// # Protocol
//
// NIS listens on TCP port 3551. Every message in both directions is a 2-byte
// big-endian length followed by that many bytes. The client sends the command
// "status" (or "events"); apcupsd answers with one record per line, such as
// "STATUS   : ONLINE \n", and ends the answer with a zero-length record. A
// status answer starts with the header record "APC      : 001,059,1257\n"
// (format revision, number of records that follow, number of bytes that
// follow) and ends with "END APC  : <time>\n". Like apcaccess, [Status] opens
// one connection per query and closes it after the answer. [Events] reads
// apcupsd's event log the same way.
//
// Framing is checked strictly: a record longer than [MaxRecordLen], a record
// or answer cut short, more than Options.MaxRecords records, a header whose
// counts disagree with what followed, a line without a ':' separator or with
// control bytes all give an error matching [ErrProtocol]. Unknown keys are
// kept in Report.Fields and otherwise ignored. Transport failures (refused,
// reset, deadline) are returned wrapped with the address, and a cancelled
// context interrupts a query at once.
//
// # Status mapping
//
// NUT tokens come from the STATFLAG bit mask (apcupsd's UPS_* bits in
// include/defines.h). Only when an answer has no usable STATFLAG are the
// STATUS words used instead.
//
//	STATFLAG bit             value       STATUS word     NUT token / meaning
//	UPS_calibration          0x00000001  CAL             CAL
//	UPS_trim                 0x00000002  TRIM            TRIM
//	UPS_boost                0x00000004  BOOST           BOOST
//	UPS_online               0x00000008  ONLINE          OL
//	UPS_onbatt               0x00000010  ONBATT          OB
//	UPS_overload             0x00000020  OVERLOAD        OVER
//	UPS_battlow              0x00000040  LOWBATT         LB
//	UPS_replacebatt          0x00000080  REPLACEBATT     RB
//	UPS_commlost             0x00000100  COMMLOST        Report.CommLost: no tokens (silence)
//	UPS_shutdown             0x00000200  SHUTTING DOWN   FSD
//	UPS_slave                0x00000400  SLAVE           (none)
//	UPS_slavedown            0x00000800  SLAVEDOWN       (none)
//	UPS_onbatt_msg           0x00020000  -               (none)
//	UPS_fastpoll             0x00040000  -               (none)
//	UPS_shut_load            0x00080000  -               FSD
//	UPS_shut_btime           0x00100000  -               FSD
//	UPS_shut_ltime           0x00200000  -               FSD
//	UPS_shut_emerg           0x00400000  -               FSD
//	UPS_shut_remote          0x00800000  -               FSD
//	UPS_plugged              0x01000000  -               (none)
//	UPS_dev_setup            0x02000000  -               (none)
//	UPS_battpresent          0x04000000  NOBATT if clear (none)
//
// FSD means apcupsd itself has decided to shut its machine down (a shut_*
// reason, or shutdown in progress): the UPS may cut power soon, exactly like
// NUT's forced shutdown. With apcupsd 3.14.14 the shut_* bits appear some
// seconds before STATUS turns to SHUTTING DOWN (when it runs apccontrol
// doshutdown), so FSD is seen first through STATFLAG. Tokens are returned in the order FSD, OL, OB, LB,
// RB, OVER, CAL, TRIM, BOOST. apcupsd reports no charging, discharging,
// bypass, output-off or alarm state, so CHRG, DISCHRG, BYPASS, OFF, HB and
// ALARM never appear. NOBATT (battery not present) is only kept in
// Report.Fields: apcupsd's test and several older drivers report it although
// a battery is there.
//
// When apcupsd has lost contact with its UPS (STATFLAG bit 0x100 or the word
// COMMLOST), the other values are only the last ones it knew. [Report.CommLost]
// is then true, [Report.NUTStatus] returns no token and [Report.Vars] returns
// only the identity variables: the caller treats the UPS as silent, like
// NUT's ERR DRIVER-NOT-CONNECTED. (NUT's own apcupsd-ups driver reports OFF
// there instead, and LB for SHUTTING DOWN.)
//
// The package nistest beside this one is an in-process NIS server for tests
// and the demo.
package apcupsd
