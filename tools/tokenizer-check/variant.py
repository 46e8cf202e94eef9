# Cross-checks our tokenizer against llama.cpp itself (optional; see
# Tests/TokenizerTests/ReferenceCrossCheck.swift). PEER: the llama-cpp-python source tree
# with vendor/llama.cpp built; OUT: where variant vocab files are written.
import os
PEER = os.environ.get("PEER", "/work/peer/llama_cpp_python-0.3.36")
OUT = os.environ.get("OUT", "/tmp/tokv")
import sys
sys.path.insert(0, PEER + '/vendor/llama.cpp/gguf-py')
from gguf import GGUFReader, GGUFWriter, GGUFValueType
import numpy as np

def clone(src, dst, overrides, drop=()):
    r = GGUFReader(src)
    arch = 'llama'
    w = GGUFWriter(dst, arch=None) if False else GGUFWriter(dst, arch)
    # GGUFWriter adds general.architecture itself
    for k, f in r.fields.items():
        if k.startswith('GGUF.') or k == 'general.architecture' or k in drop or k in overrides:
            continue
        t = f.types[0]
        if t == GGUFValueType.ARRAY:
            et = f.types[1]
            if et == GGUFValueType.STRING:
                vals = [bytes(f.parts[i]) for i in f.data]
            else:
                vals = [f.parts[i][0].item() for i in f.data]
            w.add_key_value(k, vals, GGUFValueType.ARRAY, sub_type=et)
        elif t == GGUFValueType.STRING:
            w.add_key_value(k, bytes(f.parts[f.data[0]]).decode('utf-8'), t)
        else:
            w.add_key_value(k, f.parts[f.data[0]][0].item(), t)
    for k, (v, t) in overrides.items():
        w.add_key_value(k, v, t)
    w.write_header_to_file(); w.write_kv_data_to_file(); w.write_tensors_to_file(); w.close()

S = GGUFValueType.STRING
B = GGUFValueType.BOOL
V = '/work/shared/vocab/ggml-vocab-'
for pre in ['default', 'starcoder', 'deepseek-llm', 'qwen2', 'llama-bpe', 'smaug-bpe', 'chatglm-bpe', 'command-r', 'megrez']:
    clone(V + 'gpt-2.gguf', OUT + '/var-gpt2-%s.gguf' % pre, {'tokenizer.ggml.pre': (pre, S)})
clone(V + 'gpt-2.gguf', OUT + '/var-gpt2-nopre.gguf', {}, drop=('tokenizer.ggml.pre',))
clone(V + 'qwen2.gguf', OUT + '/var-qwen2-default.gguf', {'tokenizer.ggml.pre': ('default', S)})
clone(V + 'deepseek-llm.gguf', OUT + '/var-deepseek-gpt2.gguf', {'tokenizer.ggml.pre': ('gpt-2', S)})
clone(V + 'llama-spm.gguf', OUT + '/var-spm-noprefix.gguf', {'tokenizer.ggml.add_space_prefix': (False, B), 'general.name': ('spm-noprefix', S)})
clone(V + 'llama-bpe.gguf', OUT + '/var-llama-bpe-prefix.gguf', {'tokenizer.ggml.add_space_prefix': (True, B), 'tokenizer.ggml.add_bos_token': (False, B), 'tokenizer.ggml.add_eos_token': (True, B)})
print('ok')
