# Shared by the tools/ scripts (source it): where the peer llama.cpp build lives, medians.

# Path of a llama.cpp tool from the peer build (llama-cpp-python's sdist, built under
# /work/peer), or nothing when there is none.
peer_tool() {
    ls /work/peer/llama_cpp_python-*/vendor/llama.cpp/build/bin/"$1" 2>/dev/null | head -1 || true
}

# Median of the numbers on stdin, one per line ("nan" when there are none).
median() {
    sort -g | awk '{ a[NR] = $1 } END { if (NR == 0) print "nan"; else if (NR % 2) print a[(NR + 1) / 2]; else printf "%.3f\n", (a[NR / 2] + a[NR / 2 + 1]) / 2 }'
}
