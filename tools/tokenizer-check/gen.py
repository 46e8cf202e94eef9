# Cross-checks our tokenizer against llama.cpp itself (optional; see
# Tests/TokenizerTests/ReferenceCrossCheck.swift). PEER: the llama-cpp-python source tree
# with vendor/llama.cpp built; OUT: where variant vocab files are written.
import os
PEER = os.environ.get("PEER", "/work/peer/llama_cpp_python-0.3.36")
OUT = os.environ.get("OUT", "/tmp/tokv")
import sys, json, random, base64, os
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from ref import *

random.seed(int(sys.argv[2]) if len(sys.argv) > 2 else 1)
out_path = sys.argv[1]

pools = {
 'ascii_letters': 'abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ',
 'digits': '0123456789',
 'space': [' ', ' ', ' ', '  ', '   ', '\t', '\n', '\n\n', '\r\n', '\r', '\x0b', '\x0c', '\u00a0', '\u2028', '\u0085', '\u3000', '\u2003', '\u1680', '\x1c', '\x1f'],
 'punct': list('!"#$%&\'()*+,-./:;<=>?@[\\]^_`{|}~') + ["'s", "'S", "'re", "'RE", "'Ve", "'ll", "'LL", "'d", "'m", "'t", "'T", "' "],
 'latin': 'àáâãäåæçèéêëìíîïðñòóôõöøùúûüýþÿÀÁÂÃÄÅÆÇÈÉÊËÌÍÎÏÐÑÒÓÔÕÖØÙÚÛÜÝÞßĀāĂăĄąŁłŒœŠšŽžƒǅǈ',
 'greek_cyr': 'αβγδεζηθικλμνξοπρστυφχψωΑΒΓΔΩабвгдеёжзийклмнопрстуфхцчшщъыьэюяАБВГДЕЖЗИЙКЛМНОПРЯ',
 'cjk': '我想在工作天中文字符测试的了是不人有这个上们来到时大地为子中你说生国年着就那和要她出也得里后自以会家可下而过天去能对小多然于心学么之都好看起发当没成只如事把还用第样道想作种开美总从无情己面最女但现前些所同日手又行意动方期它头经长儿回位分爱老因很给名法间斯知世什两次使身者被高已亲其进此话常与活正感見れるからなとしてのですはガギグゲゴ가각간갇갈감갑값강개객걀거걱건걷걸검겁것게겨격한국어',
 'emoji': ['🦙', '😀', '😶‍🌫️', '👍🏽', '🇺🇸', '✅', '❤️', '🚀', '\U0001F9D1\u200D\U0001F4BB'],
 'marks': ['\u0301', '\u0308', 'e\u0301', 'a\u0300', '\u0915\u094D\u0937', 'ก่', 'ញ់', 'ើ', '\u20DD'],
 'numbers_other': ['٣', '٤٥', '१२३', '²', '³', '½', 'Ⅻ', 'ⅷ', '①', '〇', '१', '𝟘𝟙', '๒', '߁'],
 'fullwidth': ['！', '？', '，', '。', '、', '：', '；', '（', '）', '～', '＂', 'Ａ', 'ｚ', '＃', '‘', '’', '“', '”', '…', '—', '«', '»', '¿', '¡', '§', '¶', '·'],
 'newer_unicode': ['\u0897', '\u1c89', '\u1c8a', '\U00010D40', '\U00010D41', '\u20c1', '\u2427', '\U0001FAE9', '\U0001FAEA', '\U00011F00'],
 'unassigned_pua': ['\ue000', '\uf8ff', '\U000F0000', '\u0378', '\U0003FFFD', '\u200b', '\u200d', '\ufeff', '\u00ad'],
 'special': ['<s>', '</s>', '<unk>', '<|endoftext|>', '<|im_start|>', '<|im_end|>', '<|begin_of_text|>', '<|eot_id|>', '<|end|>', '<|user|>', '<|assistant|>', '[PAD151700]', '[PAD100020]', 'ø', 'ö', 'ü', '<｜end▁of▁sentence｜>', '<|reserved_special_token_3|>', '<|start_header_id|>', '▁', '▁▁', '<0x0A>', '<|placeholder1|>', '<|system|>'],
 'words': ['Hello', ' world', ' the', ' quick', ' brown', 'fox', "don't", "I'm", "we'll", "they've", 'HTTP', 'https://example.com/a?b=c', 'snake_case', 'CamelCase', 'x86_64', '3.14159', '1,000,000', '2024-01-01', '  indented', '\tcode();', 'func f() { return 0 }', '#include <stdio.h>', 'naïve café', 'Ünïcödé', 'Straße', 'İstanbul', 'ǅemal', 'ﬁne', 'K\u212a'],
}
keys = list(pools.keys())

def rand_piece():
    k = random.choice(keys)
    p = pools[k]
    if isinstance(p, str):
        n = random.choice([1, 1, 2, 3, 5, 8])
        return ''.join(random.choice(p) for _ in range(n))
    return random.choice(p)

def rand_text():
    n = random.choice([1, 2, 3, 5, 8, 13, 21, 40])
    return ''.join(rand_piece() for _ in range(n))

texts = []
for _ in range(int(os.environ.get('NRAND', '1500'))):
    texts.append(rand_text().encode('utf-8'))
# edge cases
for s in ['', ' ', '  ', '\n', ' \n', '\n ', 'a', ' a', '  a', 'a  ', 'a ', "'", "''", "'s", " 's", "'S", "'ll", "'LL", "'l", "'", '1', '12', '123', '1234', '12345', '1 2', ' 1', '١٢٣٤', '<s>', ' <s> ', '<s><s>', '</s></s>', 'a</s>b', 'a </s> b', '\u3000\u3000a', '\u00a0a', 'a\u00a0', '!!!', ' !!!', ' !!!\n\n', '...\r\n\r\n', '\r\r\n\n', ' \u0897a', 'a\u0897', ' \ue000', '   \ue000', '日本語テキスト', '한국어 텍스트']:
    texts.append(s.encode('utf-8'))
# a few large real texts
srcs = [PEER + '/vendor/llama.cpp/README.md', PEER + '/vendor/llama.cpp/src/unicode.cpp', PEER + '/README.md']
for p in srcs:
    texts.append(open(p, 'rb').read()[:60000])

names = ['llama-spm', 'phi-3', 'llama-bpe', 'qwen2', 'gpt-2', 'deepseek-llm']
extra_models = ['/work/shared/models/tiny-llama.f16.gguf', '/work/shared/models/tiny-qwen3.f16.gguf']
paths = os.environ['VOCABS'].split(',') if os.environ.get('VOCABS') else ['/work/shared/vocab/ggml-vocab-%s.gguf' % n for n in names] + extra_models
with open(out_path, 'w') as f:
    for path in paths:
        v = Vocab(path)
        nv = L.llama_vocab_n_tokens(v.v)
        pieces = [base64.b64encode(v.piece(i, False)).decode() for i in range(nv)]
        pieces_sp = [base64.b64encode(v.piece(i, True)).decode() for i in range(nv)]
        f.write(json.dumps({'vocab': path, 'pieces': pieces, 'pieces_special': pieces_sp,
            'bos': L.llama_vocab_bos(v.v), 'eos': L.llama_vocab_eos(v.v), 'eot': L.llama_vocab_eot(v.v),
            'eog': [i for i in range(nv) if L.llama_vocab_is_eog(v.v, i)],
            'add_bos': bool(L.llama_vocab_get_add_bos(v.v)), 'add_eos': bool(L.llama_vocab_get_add_eos(v.v))}) + '\n')
        for t in texts:
            for ps in (False, True):
                for addsp in ([False, True] if len(t) < 200 else [False]):
                    ids = v.tokenize(t, addsp, ps)
                    rec = {'vocab': path, 'text': base64.b64encode(t).decode(), 'parse_special': ps, 'add_special': addsp, 'ids': ids}
                    if not addsp:
                        rec['detok'] = base64.b64encode(v.detokenize(ids, False, False)).decode()
                        rec['detok_special'] = base64.b64encode(v.detokenize(ids, False, True)).decode()
                        if ids and random.random() < 0.3:
                            withbos = [L.llama_vocab_bos(v.v)] + ids if L.llama_vocab_bos(v.v) >= 0 else ids
                            rec['bos_ids'] = withbos
                            rec['bos_detok'] = base64.b64encode(v.detokenize(withbos, False, False)).decode()
                    f.write(json.dumps(rec) + '\n')
print('texts', len(texts))
