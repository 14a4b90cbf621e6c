#!/bin/sh
# layers.sh: the folders are the architecture. Each folder includes only lower ones (base < formats <
# kernels < runtime < calib < quant < cmd; bench and tests may include anything), and inside a folder no
# two modules (a .c and its .h) include each other, directly or round a longer circle.
set -e
rank() { case $1 in base) echo 0;; formats) echo 1;; kernels) echo 2;; runtime) echo 3;; calib) echo 4;; quant) echo 5;; cmd) echo 6;; *) echo -1;; esac; }
bad=0
for f in $(find base formats kernels runtime calib quant cmd -name '*.[ch]' -o -name '*.cu' -o -name '*.cuh'); do
    top=${f%%/*}; r=$(rank $top)
    for inc in $(sed -n 's/^[ \t]*#[ \t]*include[ \t]*"\([^"]*\)".*/\1/p' "$f"); do
        p=$(realpath -m --relative-to=. "$(dirname "$f")/$inc")
        t=${p%%/*}; tr_=$(rank $t)
        [ "$tr_" -ge 0 ] || continue
        if [ "$tr_" -gt "$r" ]; then echo "$f includes $p: $t is above $top"; bad=$((bad + 1)); fi
    done
done
# module circles inside each folder (kernels/cpu and kernels/cuda count as folders of their own); a module is
# a .c (or .cu) with its .h, so a header-only internal header shared by several files is not one
for d in base formats kernels kernels/cpu kernels/cuda runtime calib quant cmd; do
    for f in $d/*.c $d/*.h $d/*.cu; do
        [ -f "$f" ] || continue
        m=$(basename "${f%.*}")
        sed -n 's/^[ \t]*#[ \t]*include[ \t]*"\([^"/]*\)\.h".*/\1/p' "$f" | while read -r t; do [ "$t" != "$m" ] && { [ -f $d/$t.c ] || [ -f $d/$t.cu ]; } && echo "$m $t"; done
    done | sort -u | awk -v d=$d '
        { e[$1] = e[$1] " " $2; n[$1]; n[$2] }
        function visit(v,   i, k, a) { if (st[v] == 1) { cyc = cyc " " v; return 1 } if (st[v] == 2) return 0
            st[v] = 1; k = split(e[v], a, " "); for (i = 1; i <= k; i++) if (visit(a[i])) { if (!done) cyc = cyc " <- " v; if (a[i] == v) done = 1; st[v] = 2; return 1 }
            st[v] = 2; return 0 }
        END { for (v in n) if (visit(v)) { print d ": include circle:" cyc; exit 1 } }' || bad=$((bad + 1))
done
[ $bad -eq 0 ] || { echo "$bad layering faults"; exit 1; }
echo "layers: every include goes down, no module circle"
