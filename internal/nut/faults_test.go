package nut_test

import (
	"bufio"
	"context"
	"errors"
	"net"
	"runtime"
	"strings"
	"testing"
	"time"

	"github.com/sundown-ups/sundown/internal/nut"
	"github.com/sundown-ups/sundown/internal/nut/nuttest"
)

// slack is what a deadline may be overrun by on a loaded machine.
const slack = 2 * time.Second

func TestReadTimeoutMute(t *testing.T) {
	s := newServer(t)
	const rt = 200 * time.Millisecond
	c := dial(t, s.Addr(), nut.Options{ReadTimeout: rt})
	s.SetMute(true)
	start := time.Now()
	_, err := c.Get(ctxT(t), "ups", "ups.status")
	elapsed := time.Since(start)
	if !errors.Is(err, nut.ErrTimeout) || !errors.Is(err, nut.ErrTransport) || !nut.IsSilence(err) {
		t.Errorf("Get from a mute server: %v, want ErrTimeout", err)
	}
	if elapsed > rt+slack {
		t.Errorf("Get took %s, deadline was %s", elapsed, rt)
	}
	if _, err := c.Get(ctxT(t), "ups", "ups.status"); !errors.Is(err, nut.ErrClosed) {
		t.Errorf("after a timeout: %v, want ErrClosed", err)
	}
}

func TestReadTimeoutTrickle(t *testing.T) {
	s := newServer(t)
	long := `VAR ups ups.status "` + strings.Repeat("x", 200) + "\"\n"
	s.SetHook(func(_ int, line string) (string, bool) {
		return long, strings.HasPrefix(line, "GET VAR")
	})
	s.SetTrickle(100 * time.Millisecond) // the whole line would take 22 s
	const rt = 300 * time.Millisecond
	c := dial(t, s.Addr(), nut.Options{ReadTimeout: rt})
	start := time.Now()
	_, err := c.Get(ctxT(t), "ups", "ups.status")
	elapsed := time.Since(start)
	if !errors.Is(err, nut.ErrTimeout) {
		t.Errorf("Get from a trickling server: %v, want ErrTimeout", err)
	}
	if elapsed > rt+slack {
		t.Errorf("Get took %s, deadline was %s", elapsed, rt)
	}
}

func TestContextDeadlineBeatsReadTimeout(t *testing.T) {
	s := newServer(t)
	c := dial(t, s.Addr(), nut.Options{ReadTimeout: time.Minute})
	s.SetReplyDelay(time.Minute)
	ctx, cancel := context.WithTimeout(context.Background(), 100*time.Millisecond)
	defer cancel()
	start := time.Now()
	_, err := c.Get(ctx, "ups", "ups.status")
	if !errors.Is(err, context.DeadlineExceeded) || !nut.IsSilence(err) {
		t.Errorf("Get past the context deadline: %v", err)
	}
	if d := time.Since(start); d > 100*time.Millisecond+slack {
		t.Errorf("Get took %s", d)
	}
	if !c.Closed() {
		t.Error("a reply cut short must close the connection")
	}
}

func TestCancelInterruptsBlockedRead(t *testing.T) {
	s := newServer(t)
	arrived := make(chan struct{}, 1)
	s.SetHook(func(_ int, line string) (string, bool) {
		if strings.HasPrefix(line, "GET VAR") {
			arrived <- struct{}{}
			return "", true // never answer
		}
		return "", false
	})
	c := dial(t, s.Addr(), nut.Options{ReadTimeout: time.Minute})
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	done := make(chan error, 1)
	start := time.Now()
	go func() {
		_, err := c.Get(ctx, "ups", "ups.status")
		done <- err
	}()
	<-arrived // the client is now blocked reading the reply
	cancel()
	err := <-done
	if !errors.Is(err, context.Canceled) {
		t.Errorf("Get after cancel: %v, want context.Canceled", err)
	}
	if nut.IsSilence(err) {
		t.Errorf("cancellation counted as silence: %v", err)
	}
	if d := time.Since(start); d > slack {
		t.Errorf("cancel took %s to interrupt the read", d)
	}
	if _, err := c.Get(context.Background(), "ups", "ups.status"); !errors.Is(err, nut.ErrClosed) {
		t.Errorf("after an interrupted read: %v, want ErrClosed", err)
	}
}

func TestCloseInterruptsBlockedRead(t *testing.T) {
	s := newServer(t)
	arrived := make(chan struct{}, 1)
	s.SetHook(func(_ int, line string) (string, bool) {
		arrived <- struct{}{}
		return "", true // never answer
	})
	c := dial(t, s.Addr(), nut.Options{ReadTimeout: time.Minute})
	done := make(chan error, 1)
	go func() {
		_, err := c.Get(context.Background(), "ups", "ups.status")
		done <- err
	}()
	<-arrived // the client is now blocked reading the reply
	_ = c.Close()
	if err := <-done; !errors.Is(err, nut.ErrClosed) {
		t.Errorf("Get during Close: %v, want ErrClosed", err)
	}
}

func TestProtocolErrors(t *testing.T) {
	cases := []struct {
		name  string
		reply string
		run   func(context.Context, *nut.Client) error
	}{
		{"unterminated quote", "VAR ups ups.status \"OL\n", get},
		{"dangling backslash", "VAR ups ups.status OL\\\n", get},
		{"oversized line", `VAR ups ups.status "` + strings.Repeat("y", 2000) + "\"\n", get},
		{"unexpected reply", "WHAT\n", get},
		{"wrong variable echoed", "VAR ups battery.charge \"100\"\n", get},
		{"wrong UPS echoed", "VAR other ups.status \"OL\"\n", get},
		{"extra word", "VAR ups ups.status \"OL\" extra\n", get},
		{"ERR without code", "ERR\n", get},
		{"OK for GET", "OK\n", get},
		{"GetVars reply out of order", "VAR ups battery.charge \"1\"\n", getVars},
		{"not a count", "NUMLOGINS ups many\n", func(ctx context.Context, c *nut.Client) error {
			_, err := c.NumLogins(ctx, "ups")
			return err
		}},
		{"LIST without BEGIN", "VAR ups a \"1\"\nEND LIST VAR ups\n", listVar},
		{"LIST END mismatch", "BEGIN LIST VAR ups\nVAR ups a \"1\"\nEND LIST RW ups\n", listVar},
		{"LIST END for another UPS", "BEGIN LIST VAR ups\nEND LIST VAR ups2\n", listVar},
		{"LIST foreign item", "BEGIN LIST VAR ups\nRW ups a \"1\"\nEND LIST VAR ups\n", listVar},
		{"LIST ERR inside", "BEGIN LIST VAR ups\nERR DATA-STALE\nEND LIST VAR ups\n", listVar},
		{"LIST too many items", "BEGIN LIST VAR ups\nVAR ups a \"1\"\nVAR ups b \"2\"\nVAR ups c \"3\"\nEND LIST VAR ups\n", listVar},
		{"two replies to one command", "VAR ups ups.status \"OL\"\nVAR ups ups.status \"OB\"\n", func(ctx context.Context, c *nut.Client) error {
			if _, err := c.Get(ctx, "ups", "ups.status"); err != nil {
				return err
			}
			_, err := c.NumLogins(ctx, "ups")
			return err
		}},
		{"LIST cut short", "BEGIN LIST VAR ups\nVAR ups a \"1\"\n", listVar},
		{"LOGOUT answered with garbage", "Bye\n", func(ctx context.Context, c *nut.Client) error { return c.Logout(ctx) }},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			s := newServer(t)
			s.SetHook(func(_ int, line string) (string, bool) {
				if strings.HasPrefix(line, "GET VAR ups battery.charge") {
					return "", true // the second GetVars reply never comes
				}
				return tc.reply, true
			})
			c := dial(t, s.Addr(), nut.Options{MaxListItems: 2, ReadTimeout: 500 * time.Millisecond})
			err := tc.run(ctxT(t), c)
			if tc.name == "LIST cut short" {
				if !errors.Is(err, nut.ErrTimeout) {
					t.Errorf("err = %v, want ErrTimeout", err)
				}
			} else if !errors.Is(err, nut.ErrProtocol) {
				t.Errorf("err = %v, want ErrProtocol", err)
			}
			if !nut.IsSilence(err) {
				t.Errorf("IsSilence(%v) = false", err)
			}
			if !c.Closed() {
				t.Error("connection still open after a protocol error")
			}
			if _, err := c.Get(ctxT(t), "ups", "ups.status"); !errors.Is(err, nut.ErrClosed) {
				t.Errorf("next call: %v, want ErrClosed", err)
			}
		})
	}
}

func get(ctx context.Context, c *nut.Client) error {
	_, err := c.Get(ctx, "ups", "ups.status")
	return err
}

func getVars(ctx context.Context, c *nut.Client) error {
	_, err := c.GetVars(ctx, "ups", "ups.status", "battery.charge")
	return err
}

func listVar(ctx context.Context, c *nut.Client) error {
	_, err := c.ListVar(ctx, "ups")
	return err
}

// TestGetVarsIsPipelined uses a server that reads all requests before it
// answers any: a client that waited for each reply would time out.
func TestGetVarsIsPipelined(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	served := make(chan error, 1)
	go func() {
		nc, err := ln.Accept()
		if err != nil {
			served <- err
			return
		}
		defer nc.Close()
		_ = nc.SetDeadline(time.Now().Add(10 * time.Second))
		r := bufio.NewReader(nc)
		var lines []string
		for range 4 {
			l, err := r.ReadString('\n')
			if err != nil {
				served <- err
				return
			}
			lines = append(lines, strings.TrimSpace(l))
		}
		var reply strings.Builder
		for _, l := range lines {
			f := strings.Fields(l) // GET VAR ups name
			if f[3] == "missing" {
				reply.WriteString("ERR VAR-NOT-SUPPORTED\n")
				continue
			}
			reply.WriteString("VAR ups " + f[3] + " \"v-" + f[3] + "\"\n")
		}
		_, err = nc.Write([]byte(reply.String()))
		served <- err
	}()
	c := dial(t, ln.Addr().String(), nut.Options{ReadTimeout: 5 * time.Second})
	got, err := c.GetVars(ctxT(t), "ups", "a", "missing", "b", "c")
	if err != nil {
		t.Fatal(err)
	}
	if len(got) != 3 || got["a"] != "v-a" || got["b"] != "v-b" || got["c"] != "v-c" {
		t.Errorf("GetVars = %v", got)
	}
	if err := <-served; err != nil {
		t.Errorf("server: %v", err)
	}
}

// TestNoGoroutineLeak checks that closing clients and the server leaves
// no goroutine behind, including after timeouts, TLS and trickling.
func TestNoGoroutineLeak(t *testing.T) {
	before := runtime.NumGoroutine()
	func() {
		pki := newPKI(t, "leak-ca")
		s := nuttest.NewServer()
		s.AddUPS("ups", "", map[string]string{"ups.status": "OL"})
		s.AddUser(adminUser, adminPass, nuttest.Perms{InstCmds: []string{"ALL"}})
		s.EnableTLS(pki.leaf(t, nil, []net.IP{net.IPv4(127, 0, 0, 1)}))
		s.SetTrackingPending(1)
		if err := s.Start("127.0.0.1:0"); err != nil {
			t.Fatal(err)
		}
		defer s.Close()
		ctx := ctxT(t)
		var clients []*nut.Client
		for i := range 4 {
			opts := nut.Options{TrackingInterval: time.Millisecond, ReadTimeout: 300 * time.Millisecond}
			if i%2 == 0 {
				opts.TLS = &nut.TLSOptions{CAFile: pki.caFile}
			}
			c, err := nut.Dial(ctx, s.Addr(), opts)
			if err != nil {
				t.Fatal(err)
			}
			clients = append(clients, c)
			if _, err := c.GetVars(ctx, "ups", "ups.status"); err != nil {
				t.Fatal(err)
			}
			if err := c.Username(ctx, adminUser); err != nil {
				t.Fatal(err)
			}
			if err := c.Password(ctx, adminPass); err != nil {
				t.Fatal(err)
			}
			if err := c.InstCmd(ctx, "ups", "load.off", ""); err != nil {
				t.Fatal(err)
			}
		}
		s.SetTrickle(50 * time.Millisecond)
		if _, err := clients[0].Get(ctx, "ups", "ups.status"); !errors.Is(err, nut.ErrTimeout) {
			t.Errorf("trickle: %v", err)
		}
		s.SetTrickle(0)
		s.SetMute(true)
		cctx, cancel := context.WithTimeout(ctx, 50*time.Millisecond)
		_, _ = clients[1].Get(cctx, "ups", "ups.status")
		cancel()
		for _, c := range clients {
			_ = c.Close()
		}
		if err := s.Close(); err != nil {
			t.Errorf("server Close: %v", err)
		}
	}()
	deadline := time.Now().Add(5 * time.Second)
	for runtime.NumGoroutine() > before {
		if time.Now().After(deadline) {
			buf := make([]byte, 1<<16)
			n := runtime.Stack(buf, true)
			t.Fatalf("%d goroutines before, %d after:\n%s", before, runtime.NumGoroutine(), buf[:n])
		}
		time.Sleep(10 * time.Millisecond)
	}
}
