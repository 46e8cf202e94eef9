# Cross-checks our tokenizer against llama.cpp itself (optional; see
# Tests/TokenizerTests/ReferenceCrossCheck.swift). PEER: the llama-cpp-python source tree
# with vendor/llama.cpp built; OUT: where variant vocab files are written.
import os
PEER = os.environ.get("PEER", "/work/peer/llama_cpp_python-0.3.36")
OUT = os.environ.get("OUT", "/tmp/tokv")
import os, sys, ctypes
os.environ.setdefault("LLAMA_CPP_LIB_PATH", PEER + "/vendor/llama.cpp/build/bin")
sys.path.insert(0, os.path.join(OUT, "pkg"))
import importlib.util
spec = importlib.util.spec_from_file_location("lc", PEER + "/llama_cpp/llama_cpp.py", submodule_search_locations=None)
import llama_cpp.llama_cpp as L

L.llama_backend_init()
def silent(level, text, user_data): pass
_cb = L.llama_log_callback(silent)
L.llama_log_set(_cb, None)

class Vocab:
    def __init__(self, path):
        p = L.llama_model_default_params()
        p.vocab_only = True
        self.model = L.llama_model_load_from_file(path.encode(), p)
        assert self.model
        self.v = L.llama_model_get_vocab(self.model)
    def tokenize(self, text: bytes, add_special=False, parse_special=False):
        n = len(text) + 16
        buf = (L.llama_token * n)()
        r = L.llama_tokenize(self.v, text, len(text), buf, n, add_special, parse_special)
        if r < 0:
            n = -r; buf = (L.llama_token * n)()
            r = L.llama_tokenize(self.v, text, len(text), buf, n, add_special, parse_special)
        return list(buf[:r])
    def detokenize(self, toks, remove_special=False, unparse_special=False):
        n = max(64, len(toks) * 8)
        arr = (L.llama_token * len(toks))(*toks)
        buf = ctypes.create_string_buffer(n)
        r = L.llama_detokenize(self.v, arr, len(toks), buf, n, remove_special, unparse_special)
        if r < 0:
            n = -r; buf = ctypes.create_string_buffer(n)
            r = L.llama_detokenize(self.v, arr, len(toks), buf, n, remove_special, unparse_special)
        return buf.raw[:r]
    def piece(self, t, special=False):
        buf = ctypes.create_string_buffer(256)
        r = L.llama_token_to_piece(self.v, t, buf, 256, 0, special)
        return buf.raw[:r]
