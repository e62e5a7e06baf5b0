// BpeTokenizer: the pre-tokenizer rule, exact round trips on any bytes, training against a
// naive trainer that recounts every pair, encoding against the textbook merge loop,
// determinism, serialization and its faults, and vocabulary 4096 on the fortunes corpus.
#include <algorithm>
#include <filesystem>
#include <map>

#include "core/timer.h"
#include "lm/bpe_tokenizer.h"
#include "lm/text_corpus.h"
#include "test_support.h"

namespace moe {
namespace {

using lm::BpeTokenizer;

std::vector<std::string> chunks_of(std::string_view text) {
    std::vector<std::string> out;
    for (std::string_view c : lm::pretokenize(text)) out.emplace_back(c);
    return out;
}

std::string random_bytes(size_t n, uint64_t seed, int alphabet = 256) {
    Rng rng(seed);
    std::string s(n, '\0');
    for (char& c : s) c = char(rng.below(uint64_t(alphabet)));
    return s;
}

// Text of made-up words: 1 to 4 syllables drawn with a skew (low indices far more often),
// so pair frequencies spread over a long tail as in real text; digits, punctuation, UTF-8
// and runs of whitespace mixed in.
std::string sample_text(size_t words, uint64_t seed) {
    static const char* const kSyllables[] = {
        "ka", "lo", "mi", "ne", "ru", "sa", "te", "vi",  "zo",           "qu", "ch", "th",
        "an", "er", "in", "on", "é",  "ß",  "st", "ing", "\xe4\xb8\xad", "ou", "pr", "x"};
    static const char* const kSeparators[] = {" ",  " ",  " ",  " ",   " ",      ", ",  ". ",  "\n",
                                              "  ", "\t", "! ", "'s ", " 1999 ", " 42", "\n\n"};
    Rng rng(seed);
    std::string s;
    for (size_t i = 0; i < words; ++i) {
        const uint64_t syllables = 1 + rng.below(4);
        for (uint64_t k = 0; k < syllables; ++k)
            s += kSyllables[rng.below(1 + rng.below(std::size(kSyllables)))];
        s += kSeparators[rng.below(std::size(kSeparators))];
    }
    return s;
}

// The textbook encoder: merge every occurrence of the lowest-ranked pair present, left to
// right, until no pair is a merge. Quadratic, so only for chunks of a few hundred bytes.
std::vector<int32_t> textbook_encode(const BpeTokenizer& tok, std::string_view text) {
    std::map<std::pair<int32_t, int32_t>, int32_t> rank;
    for (size_t i = 0; i < tok.merges().size(); ++i) rank[tok.merges()[i]] = int32_t(i);
    std::vector<int32_t> out;
    for (std::string_view chunk : lm::pretokenize(text)) {
        std::vector<int32_t> s;
        for (char c : chunk) s.push_back(static_cast<unsigned char>(c));
        for (;;) {
            int32_t best = -1;
            for (size_t i = 0; i + 1 < s.size(); ++i) {
                auto it = rank.find({s[i], s[i + 1]});
                if (it != rank.end() && (best < 0 || it->second < best)) best = it->second;
            }
            if (best < 0) break;
            const auto [a, b] = tok.merges()[size_t(best)];
            std::vector<int32_t> t;
            for (size_t i = 0; i < s.size();) {
                if (i + 1 < s.size() && s[i] == a && s[i + 1] == b) {
                    t.push_back(256 + best), i += 2;
                } else {
                    t.push_back(s[i++]);
                }
            }
            s.swap(t);
        }
        out.insert(out.end(), s.begin(), s.end());
    }
    return out;
}

// The naive trainer: recount every pair of every chunk before each merge.
std::vector<BpeTokenizer::Merge> naive_train(std::string_view text, int64_t merges_wanted) {
    std::map<std::string, int64_t> freq;
    for (std::string_view c : lm::pretokenize(text)) ++freq[std::string(c)];
    std::vector<std::pair<std::vector<int32_t>, int64_t>> words;
    for (const auto& [w, f] : freq) {
        std::vector<int32_t> s;
        for (char c : w) s.push_back(static_cast<unsigned char>(c));
        words.emplace_back(s, f);
    }
    std::vector<BpeTokenizer::Merge> merges;
    while (int64_t(merges.size()) < merges_wanted) {
        std::map<BpeTokenizer::Merge, int64_t> count;  // ordered: ties go to the smallest pair
        for (const auto& [s, f] : words)
            for (size_t i = 0; i + 1 < s.size(); ++i) count[{s[i], s[i + 1]}] += f;
        BpeTokenizer::Merge best{};
        int64_t best_count = 0;
        for (const auto& [p, c] : count)
            if (c > best_count) best = p, best_count = c;
        if (best_count < 2) break;
        const int32_t id = int32_t(256 + merges.size());
        merges.push_back(best);
        for (auto& [s, f] : words) {
            std::vector<int32_t> t;
            for (size_t i = 0; i < s.size();) {
                if (i + 1 < s.size() && s[i] == best.first && s[i + 1] == best.second) {
                    t.push_back(id), i += 2;
                } else {
                    t.push_back(s[i++]);
                }
            }
            s.swap(t);
        }
    }
    return merges;
}

TEST(Pretokenize, FollowsTheDocumentedRule) {
    using V = std::vector<std::string>;
    EXPECT_EQ(chunks_of("Hello world"), (V{"Hello", " world"}));
    EXPECT_EQ(chunks_of("it's 2024!!"), (V{"it", "'", "s", " 2024", "!!"}));
    EXPECT_EQ(chunks_of("abc123def"), (V{"abc", "123", "def"}));
    EXPECT_EQ(chunks_of("a   b"), (V{"a", "  ", " b"}));  // last space goes to the word
    EXPECT_EQ(chunks_of("a\n\n b"), (V{"a", "\n\n", " b"}));
    EXPECT_EQ(chunks_of("a\n\nb"), (V{"a", "\n\n", "b"}));
    EXPECT_EQ(chunks_of("end.  "), (V{"end", ".", "  "}));  // trailing spaces stay together
    EXPECT_EQ(chunks_of(" x"), (V{" x"}));
    EXPECT_EQ(chunks_of(" "), (V{" "}));
    EXPECT_EQ(chunks_of("caf\xc3\xa9 na\xc3\xafve"), (V{"caf\xc3\xa9", " na\xc3\xafve"}));
    EXPECT_EQ(chunks_of(std::string("a\0b", 3)), (V{"a", std::string(1, '\0'), "b"}));
    EXPECT_EQ(chunks_of(" -- x"), (V{" --", " x"}));
    EXPECT_TRUE(chunks_of("").empty());
}

TEST(Pretokenize, PartitionsAnyBytes) {
    for (size_t n : {1, 3, 7, 17, 64, 1000}) {
        const std::string s = random_bytes(n, n);
        std::string joined;
        for (std::string_view c : lm::pretokenize(s)) {
            EXPECT_FALSE(c.empty());
            joined += c;
        }
        EXPECT_EQ(joined, s) << "n=" << n;
    }
}

TEST(BpeTokenizer, PlainBytesWithoutMerges) {
    const BpeTokenizer tok;
    EXPECT_EQ(tok.vocab_size(), 256);
    const std::string s = random_bytes(300, 5);
    const std::vector<int32_t> ids = tok.encode(s);
    ASSERT_EQ(ids.size(), s.size());
    for (size_t i = 0; i < s.size(); ++i) EXPECT_EQ(ids[i], static_cast<unsigned char>(s[i]));
    EXPECT_EQ(tok.decode(ids), s);
}

TEST(BpeTokenizer, TrainingMatchesNaiveRecount) {
    // Mixed text: the sampler's words, plus random bytes so that rare and invalid-UTF-8
    // pairs compete too. 300 merges exhaust most pairs seen twice, exercising the stop.
    const std::string text = sample_text(3000, 1) + random_bytes(2000, 2, 8) + sample_text(500, 3);
    const BpeTokenizer tok = BpeTokenizer::train(text, 256 + 300);
    const auto want = naive_train(text, 300);
    ASSERT_EQ(tok.merges().size(), want.size());
    for (size_t i = 0; i < want.size(); ++i)
        ASSERT_EQ(tok.merges()[i], want[i]) << "merge " << i << " differs";
    EXPECT_GT(tok.vocab_size(), 256 + 50);
}

TEST(BpeTokenizer, TrainingMatchesNaiveRecountOnFortunes) {
    // Real text has the long tail of pairs that made incremental updates go wrong, if they
    // do: 300 merges on the first 60 kB of the corpus's train split.
    const lm::TextCorpus corpus = lm::TextCorpus::load(lm::kDefaultCorpus, 0.1);
    std::string text;
    for (const auto& d : corpus.domains) text += d.train.substr(0, 4000);
    text.resize(std::min<size_t>(text.size(), 60000));
    const BpeTokenizer tok = BpeTokenizer::train(text, 256 + 300);
    const auto want = naive_train(text, 300);
    ASSERT_EQ(tok.merges().size(), 300u);
    ASSERT_EQ(tok.merges(), want);
    EXPECT_EQ(tok.encode(text), textbook_encode(tok, text));
}

TEST(BpeTokenizer, StopsWhenNoPairRepeats) {
    // "abcabc": pairs ab and bc twice, ca once. After ab -> 256, (256, c) occurs twice,
    // then (257, 257) once: two merges, then nothing seen twice.
    const BpeTokenizer tok = BpeTokenizer::train("abcabc", 1000);
    EXPECT_EQ(tok.merges(), (std::vector<BpeTokenizer::Merge>{{'a', 'b'}, {256, 'c'}}));
    EXPECT_EQ(tok.vocab_size(), 258);
    EXPECT_EQ(tok.encode("abcabc"), (std::vector<int32_t>{257, 257}));
}

TEST(BpeTokenizer, MergesAcrossRunsOfOneByte) {
    // Overlapping pairs: "aaaaa" -> (a,a) merges left to right to "AA a", then "BA"...
    const BpeTokenizer tok = BpeTokenizer::train(std::string(5000, 'a'), 256 + 5);
    EXPECT_EQ(tok.merges()[0], (BpeTokenizer::Merge{'a', 'a'}));
    EXPECT_EQ(tok.merges()[1], (BpeTokenizer::Merge{256, 256}));
    for (size_t n : {1, 2, 3, 5, 7, 17, 100, 1000}) {
        const std::string s(n, 'a');
        EXPECT_EQ(tok.encode(s), textbook_encode(tok, s)) << "n=" << n;
        EXPECT_EQ(tok.decode(tok.encode(s)), s);
    }
}

TEST(BpeTokenizer, EncodeMatchesTextbookLoop) {
    const BpeTokenizer tok = BpeTokenizer::train(sample_text(20000, 7), 256 + 400);
    for (uint64_t seed = 0; seed < 5; ++seed) {
        const std::string s = sample_text(500, 100 + seed) + random_bytes(300, seed, 16);
        EXPECT_EQ(tok.encode(s), textbook_encode(tok, s)) << "seed " << seed;
    }
}

TEST(BpeTokenizer, RoundTripIsExactOnAnyBytes) {
    const BpeTokenizer tok = BpeTokenizer::train(sample_text(20000, 11), 256 + 500);
    ASSERT_EQ(tok.vocab_size(), 256 + 500);
    for (size_t n : {0, 1, 3, 7, 17, 64, 1000, 100000}) {
        for (int alphabet : {2, 16, 256}) {  // few distinct bytes: long merges apply
            const std::string s = random_bytes(n, n * 7 + uint64_t(alphabet), alphabet);
            ASSERT_EQ(tok.decode(tok.encode(s)), s) << "n=" << n << " alphabet=" << alphabet;
        }
    }
    // Invalid UTF-8 (lone continuation, overlong, truncated sequence, 0xff), NULs, mixed
    // with words the tokenizer merged.
    static const char kOdd[] =
        "the\0cat\x80\xc0\xaf sat\xff\xfe on\xe2\x82 mat\0\0caf\xc3\xa9 \xc3";
    const std::string odd(kOdd, sizeof kOdd - 1);
    const auto ids = tok.encode(odd);
    EXPECT_LT(ids.size(), odd.size());  // some merges applied
    EXPECT_EQ(tok.decode(ids), odd);
    // A megabyte without a single space is one chunk; the heap keeps it O(n log n).
    const std::string long_word(1 << 20, 't');
    Timer t;
    EXPECT_EQ(tok.decode(tok.encode(long_word)), long_word);
    EXPECT_LT(t.seconds(), 2.0 * test::time_limit_scale());
}

TEST(BpeTokenizer, TokenBytesAndDecodeChecks) {
    const BpeTokenizer tok({{'t', 'h'}, {256, 'e'}, {' ', 257}});
    EXPECT_EQ(tok.vocab_size(), 259);
    EXPECT_EQ(tok.token_bytes('x'), "x");
    EXPECT_EQ(tok.token_bytes(256), "th");
    EXPECT_EQ(tok.token_bytes(258), " the");
    EXPECT_EQ(tok.encode("the then"), (std::vector<int32_t>{257, 258, 'n'}));
    EXPECT_TRUE(test::throws_error_with([&] { tok.decode(std::vector<int32_t>{259}); },
                                        {"decode", "259", "259)"}));
    EXPECT_TRUE(test::throws_error_with([&] { tok.token_bytes(-1); }, {"token_bytes", "-1"}));
}

TEST(BpeTokenizer, TrainingIsDeterministic) {
    const std::string text = sample_text(30000, 21);
    const BpeTokenizer a = BpeTokenizer::train(text, 1000);
    int64_t calls = 0, last_done = 0, total = 0;
    const BpeTokenizer b = BpeTokenizer::train(text, 1000, [&](int64_t done, int64_t t) {
        ++calls;
        EXPECT_EQ(done, last_done + 1);
        last_done = done, total = t;
    });
    EXPECT_EQ(a.merges(), b.merges());
    EXPECT_EQ(a.to_json(), b.to_json());
    EXPECT_EQ(calls, int64_t(a.merges().size()));
    EXPECT_EQ(total, 1000 - 256);
}

TEST(BpeTokenizer, SerializationRoundTrip) {
    const BpeTokenizer tiny({{'a', 'b'}, {256, 256}});
    EXPECT_EQ(tiny.to_json(),
              R"({"type":"bpe-bytes","vocab_size":258,"merges":[[97,98],[256,256]]})");
    EXPECT_EQ(BpeTokenizer().to_json(), R"({"type":"bpe-bytes","vocab_size":256,"merges":[]})");

    const BpeTokenizer tok = BpeTokenizer::train(sample_text(20000, 31), 256 + 300);
    const BpeTokenizer back = BpeTokenizer::from_json(tok.to_json());
    EXPECT_EQ(back.merges(), tok.merges());
    EXPECT_EQ(back.vocab_size(), tok.vocab_size());
    const std::string s = sample_text(1000, 32);
    EXPECT_EQ(back.encode(s), tok.encode(s));
    // Whitespace and key order do not matter to the parser.
    const BpeTokenizer spaced = BpeTokenizer::from_json(
        "{ \"merges\" : [ [97, 98] , [256,256] ],\n \"vocab_size\": 258, \"type\": \"bpe-bytes\" "
        "}");
    EXPECT_EQ(spaced.merges(), tiny.merges());
}

TEST(BpeTokenizer, MalformedSerializationIsRejected) {
    auto rejects = [](const std::string& json, std::initializer_list<std::string> parts) {
        return test::throws_error_with([&] { BpeTokenizer::from_json(json); }, parts);
    };
    EXPECT_TRUE(rejects("", {"not valid JSON"}));
    EXPECT_TRUE(
        rejects(R"({"type":"bpe-bytes","vocab_size":257,"merges":[[97,98]])", {"not valid JSON"}));
    EXPECT_TRUE(rejects("[1,2]", {"JSON object", "array"}));
    EXPECT_TRUE(rejects(R"({"type":"bytes","vocab_size":256,"merges":[]})", {"'type'", "bytes"}));
    EXPECT_TRUE(rejects(R"({"vocab_size":256,"merges":[]})", {"missing key 'type'"}));
    EXPECT_TRUE(rejects(R"({"type":"bpe-bytes","merges":[]})", {"missing key 'vocab_size'"}));
    EXPECT_TRUE(
        rejects(R"({"type":"bpe-bytes","vocab_size":256,"merges":[],"extra":1})", {"'extra'"}));
    EXPECT_TRUE(rejects(R"({"type":"bpe-bytes","vocab_size":255,"merges":[]})",
                        {"vocab_size", ">= 256", "255"}));
    EXPECT_TRUE(rejects(R"({"type":"bpe-bytes","vocab_size":"300","merges":[]})",
                        {"vocab_size", "integer"}));
    EXPECT_TRUE(rejects(R"({"type":"bpe-bytes","vocab_size":258,"merges":[[97,98]]})",
                        {"needs 2 merges", "got 1"}));
    EXPECT_TRUE(rejects(R"({"type":"bpe-bytes","vocab_size":257,"merges":{"a":1}})",
                        {"'merges'", "array"}));
    // A merge may only use ids defined before it: merge 0 can use 0..255, merge 1 0..256.
    EXPECT_TRUE(rejects(R"({"type":"bpe-bytes","vocab_size":257,"merges":[[256,1]]})",
                        {"merge 0", "256", "not defined before"}));
    EXPECT_TRUE(rejects(R"({"type":"bpe-bytes","vocab_size":258,"merges":[[1,2],[1,257]]})",
                        {"merge 1", "257", "not defined before"}));
    EXPECT_TRUE(
        rejects(R"({"type":"bpe-bytes","vocab_size":257,"merges":[[-1,2]]})", {"merge 0", "-1"}));
    EXPECT_TRUE(rejects(R"({"type":"bpe-bytes","vocab_size":257,"merges":[[1,4294967297]]})",
                        {"merge 0", "4294967297", "not defined before"}));
    EXPECT_TRUE(rejects(R"({"type":"bpe-bytes","vocab_size":257,"merges":[[1,2,3]]})",
                        {"merge 0", "pair of integers"}));
    EXPECT_TRUE(rejects(R"({"type":"bpe-bytes","vocab_size":257,"merges":[[1.5,2]]})",
                        {"merge 0", "pair of integers"}));
    EXPECT_TRUE(rejects(R"({"type":"bpe-bytes","vocab_size":258,"merges":[[1,2],[1,2]]})",
                        {"merge 1", "repeats merge 0"}));
    EXPECT_TRUE(test::throws_error_with([] { BpeTokenizer::train("abc", 255); },
                                        {"vocab_size", ">= 256", "255"}));
    EXPECT_TRUE(test::throws_error_with(
        [] {
            BpeTokenizer({{300, 1}});
        },
        {"merge 0", "300", "not defined before"}));
}

TEST(BpeTokenizer, Vocab4096OnFortunes) {
    if (!std::filesystem::exists(lm::kDefaultCorpus))
        GTEST_FAIL() << lm::kDefaultCorpus << " is missing: run scripts/setup.sh (fortunes)";
    const lm::TextCorpus corpus = lm::TextCorpus::load(lm::kDefaultCorpus, 0.1);
    std::vector<std::string_view> train_parts;
    std::string train_text, val_text;
    for (const auto& d : corpus.domains) {
        train_parts.emplace_back(d.train);
        train_text += d.train;
        val_text += d.val;
    }
    ASSERT_GT(train_text.size(), 2'000'000u);

    Timer t;
    const BpeTokenizer tok = BpeTokenizer::train(train_parts, 4096);
    const double train_s = t.seconds();
    ASSERT_EQ(tok.vocab_size(), 4096);

    t.reset();
    const std::vector<int32_t> ids = tok.encode(train_text);
    const double encode_s = t.seconds();
    EXPECT_EQ(tok.decode(ids), train_text);
    const std::vector<int32_t> val_ids = tok.encode(val_text);
    EXPECT_EQ(tok.decode(val_ids), val_text);
    const double ratio = double(train_text.size()) / double(ids.size());
    const double val_ratio = double(val_text.size()) / double(val_ids.size());
    // Measured: 3.06 bytes per token on train, 3.02 on validation (1.93 at vocabulary 512,
    // 2.72 at 2048, 3.38 at 8192), so a tokenizer that lost merges or split words badly
    // falls under these bounds.
    EXPECT_GT(ratio, 2.95);
    EXPECT_GT(val_ratio, 2.9);
    EXPECT_LT(train_s, 10.0 * test::time_limit_scale());
    EXPECT_LT(encode_s, 3.0 * test::time_limit_scale());
    std::printf(
        "fortunes: %zu train bytes, %zu validation bytes; vocab 4096 trained in %.2f s; "
        "train text encoded in %.2f s to %zu tokens (%.3f bytes/token), validation "
        "%.3f bytes/token\n",
        train_text.size(), val_text.size(), train_s, encode_s, ids.size(), ratio, val_ratio);
    RecordProperty("train_seconds", std::to_string(train_s));
    RecordProperty("encode_seconds", std::to_string(encode_s));
    RecordProperty("bytes_per_token", std::to_string(ratio));
    RecordProperty("val_bytes_per_token", std::to_string(val_ratio));
}

}  // namespace
}  // namespace moe
