// libFuzzer harness: the BPE tokenizer as a checkpoint's "tokenizer" metadata string loads
// it (lm::BpeTokenizer::from_json, called by lm::load_lm and on --resume), then used.
//
// The input is the metadata string. Bad input must end in moe::Error; any other exception
// escaping (std::terminate, reported as a crash), a sanitizer report, a leak or a hang is a
// finding. A tokenizer that loads must keep the promises of lm/bpe_tokenizer.h:
// decode(encode(x)) == x for any bytes x, every id in [0, vocab_size()), and to_json()
// loads back to the same merges (it is what the next checkpoint stores).
#include <cstdint>
#include <cstdio>
#include <string>
#include <string_view>
#include <vector>

#include "core/check.h"
#include "lm/bpe_tokenizer.h"
#include "fuzz_check.h"

namespace {

using moe::lm::BpeTokenizer;

void check_text(const BpeTokenizer& tok, std::string_view text) {
    const std::vector<int32_t> ids = tok.encode(text);
    for (const int32_t id : ids)
        FUZZ_CHECK(id >= 0 && id < tok.vocab_size(), "encode gave an id outside the vocabulary");
    FUZZ_CHECK(tok.decode(ids) == text, "decode(encode(x)) != x");
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
    const std::string json(reinterpret_cast<const char*>(data), size);
    BpeTokenizer tok;
    try {
        tok = BpeTokenizer::from_json(json);
    } catch (const moe::Error&) {
        return 0;  // rejected with a message: the expected outcome for a malformed string
    }
    // A short English text (what `moe generate --prompt` encodes), bytes that are not
    // UTF-8, and the input itself: arbitrary bytes, often near the merges' own pairs.
    check_text(tok, "Once upon a time, the expert router sent 42 tokens... don't panic!\n");
    check_text(tok, std::string_view("\xff\xfe\x00 \t\t  x\x80", 11));
    check_text(tok, json);
    for (int64_t id = 0; id < tok.vocab_size(); ++id) tok.token_bytes(int32_t(id));

    BpeTokenizer again;
    try {
        again = BpeTokenizer::from_json(tok.to_json());
    } catch (const moe::Error& e) {
        std::fprintf(stderr, "a loaded tokenizer does not load back from to_json(): %s\n",
                     e.what());
        FUZZ_CHECK(false, "to_json round trip rejected");
    }
    FUZZ_CHECK(again.merges() == tok.merges(), "to_json round trip changed the merges");
    return 0;
}
