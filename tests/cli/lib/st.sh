# st.sh: sourced by the CLI tests: `st_bytes FILE NAME` writes the raw bytes of tensor NAME of the
# safetensors FILE to stdout (read from its JSON header's data_offsets), and fails when it is absent.
st_bytes() { # st_bytes FILE NAME
    n=$(od -An -tu8 -N8 "$1" | tr -d ' ')
    [ -n "$n" ] || return 1
    offs=$(head -c $((8 + n)) "$1" | tail -c "$n" | grep -o "\"$2\":{[^}]*}" | sed -n 's/.*"data_offsets":\[\([0-9]*\),\([0-9]*\)\].*/\1 \2/p')
    [ -n "$offs" ] || return 1
    set -- "$1" $offs
    tail -c +$((8 + n + $2 + 1)) "$1" | head -c $(($3 - $2))
}
