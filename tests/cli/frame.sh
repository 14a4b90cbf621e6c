#!/bin/sh
# frame.sh: the CLI frame: help, --help, --version, and the exit codes of SPEC.md.
$SPOTQ --version | grep -qE '^spotq [0-9]+\.[0-9]+\.[0-9]+$' || { echo "--version"; exit 1; }
$SPOTQ help | grep -q "inspect" || { echo "help lists commands"; exit 1; }
$SPOTQ help inspect | grep -q "^usage: spotq inspect MODEL" || { echo "help inspect"; exit 1; }
$SPOTQ inspect --help | grep -q -- "--json" || { echo "inspect --help"; exit 1; }
$SPOTQ tokenize --help | grep -q -- "--decode" || { echo "tokenize --help"; exit 1; }
$SPOTQ nosuchcmd 2>/dev/null; [ $? -eq 2 ] || { echo "unknown command: exit 2"; exit 1; }
$SPOTQ 2>/dev/null; [ $? -eq 2 ] || { echo "no command: exit 2"; exit 1; }
$SPOTQ inspect 2>/dev/null; [ $? -eq 2 ] || { echo "missing argument: exit 2"; exit 1; }
$SPOTQ inspect models/stories260K --bogus 2>/dev/null; [ $? -eq 2 ] || { echo "unknown option: exit 2"; exit 1; }
err=$($SPOTQ inspect models/stories260K --bogus 2>&1 >/dev/null)
[ "$(echo "$err" | wc -l)" -eq 1 ] || { echo "usage error is one line: $err"; exit 1; }
exit 0
