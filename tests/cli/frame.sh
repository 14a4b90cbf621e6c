#!/bin/sh
# frame.sh: the CLI frame: help, --help, --version, and the exit codes of SPEC.md.
$SPOTQ --version | grep -qE '^spotq [0-9]+\.[0-9]+\.[0-9]+$' || { echo "--version"; exit 1; }
$SPOTQ help | grep -q "inspect" || { echo "help lists commands"; exit 1; }
$SPOTQ help inspect | grep -q "^usage: spotq inspect MODEL" || { echo "help inspect"; exit 1; }
$SPOTQ inspect --help | grep -q -- "--json" || { echo "inspect --help"; exit 1; }
$SPOTQ tokenize --help | grep -q -- "--decode" || { echo "tokenize --help"; exit 1; }
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
fail() { echo "frame: $*"; exit 1; }
. tests/cli/lib/expect.sh
expect 2 "^spotq: unknown command 'nosuchcmd' \(see spotq help\)$" -- nosuchcmd
expect 2 "^spotq inspect: unknown option '--bogus' \(see spotq inspect --help\)$" -- inspect models/stories260K --bogus
# no command: the usage on stderr; a missing argument: the command's usage after the one-line reason
set +e
$SPOTQ 2>$tmp/err; rc=$?
[ $rc -eq 2 ] && head -n 1 $tmp/err | grep -q "^usage: spotq COMMAND" || fail "no command: exit $rc: $(cat $tmp/err)"
$SPOTQ inspect 2>$tmp/err; rc=$?
[ $rc -eq 2 ] && head -n 1 $tmp/err | grep -q "^spotq inspect: missing argument" || fail "missing argument: exit $rc: $(cat $tmp/err)"
exit 0
