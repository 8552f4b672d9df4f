// Command sundown-man writes sundown's man pages into a folder:
//
//	sundown-man -out DIR -version v1.2.3
//
// The pages' date is SOURCE_DATE_EPOCH when set (reproducible builds).
package main

import (
	"flag"
	"fmt"
	"os"
	"strconv"
	"time"

	"github.com/sundown-ups/sundown/dist/deb/manpage"
)

func main() {
	out := flag.String("out", "man", "folder to write the *.1 pages to")
	version := flag.String("version", "dev", "sundown version for the pages' footer")
	flag.Parse()
	date := time.Now()
	if s := os.Getenv("SOURCE_DATE_EPOCH"); s != "" {
		sec, err := strconv.ParseInt(s, 10, 64)
		if err != nil {
			fmt.Fprintln(os.Stderr, "sundown-man: SOURCE_DATE_EPOCH is not a number:", s)
			os.Exit(2)
		}
		date = time.Unix(sec, 0)
	}
	if err := manpage.Generate(*out, *version, date); err != nil {
		fmt.Fprintln(os.Stderr, "sundown-man:", err)
		os.Exit(1)
	}
}
