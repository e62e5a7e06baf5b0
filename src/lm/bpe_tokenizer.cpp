#include "lm/bpe_tokenizer.h"

#include <algorithm>
#include <nlohmann/json.hpp>
#include <queue>

#include "core/check.h"
#include "core/parse_number.h"
#include "io/json_text.h"

namespace moe::lm {

namespace {

enum class ByteClass : uint8_t { letter, digit, space, other };

constexpr ByteClass classify(unsigned char c) {
    if ((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || c >= 0x80) return ByteClass::letter;
    if (c >= '0' && c <= '9') return ByteClass::digit;
    if (c == ' ' || (c >= '\t' && c <= '\r')) return ByteClass::space;
    return ByteClass::other;
}

uint64_t pair_key(int32_t a, int32_t b) {
    return uint64_t(uint32_t(a)) << 32 | uint32_t(b);
}
int32_t key_first(uint64_t k) {
    return int32_t(k >> 32);
}
int32_t key_second(uint64_t k) {
    return int32_t(uint32_t(k));
}

// A pair with its count, as the training heap orders it: most frequent first, then the
// smallest (a, b), so ties break the same way on every machine.
struct Candidate {
    int64_t count;
    uint64_t key;  // (a << 32 | b): comparing keys compares (a, b) lexicographically
    bool operator<(const Candidate& o) const {  // "lower priority than"
        return count != o.count ? count < o.count : key > o.key;
    }
};

// Per distinct pair during training: its weighted count and the chunks that may hold it
// (a superset: chunks that lost the pair to an earlier merge stay listed and are skipped).
struct PairInfo {
    int64_t count = 0;
    std::vector<int32_t> words;
};

}  // namespace

std::vector<std::string_view> pretokenize(std::string_view text) {
    std::vector<std::string_view> chunks;
    const size_t n = text.size();
    auto cls = [&](size_t i) { return classify(static_cast<unsigned char>(text[i])); };
    size_t i = 0;
    while (i < n) {
        const size_t start = i;
        ByteClass c = cls(i);
        if (text[i] == ' ' && i + 1 < n && cls(i + 1) != ByteClass::space) c = cls(++i);
        if (c != ByteClass::space) {
            while (i < n && cls(i) == c) ++i;
        } else {
            while (i < n && cls(i) == ByteClass::space) ++i;
            // Leave a final ' ' to the word that follows, as GPT-2's "\s+(?!\S)" does.
            if (i < n && i - start >= 2 && text[i - 1] == ' ') --i;
        }
        chunks.push_back(text.substr(start, i - start));
    }
    return chunks;
}

BpeTokenizer::BpeTokenizer() : BpeTokenizer(std::vector<Merge>{}) {}

BpeTokenizer::BpeTokenizer(std::vector<Merge> merges) : merges_(std::move(merges)) {
    bytes_.reserve(256 + merges_.size());
    for (int b = 0; b < 256; ++b) bytes_.emplace_back(1, char(b));
    rank_.reserve(merges_.size() * 2);
    for (size_t i = 0; i < merges_.size(); ++i) {
        const auto [a, b] = merges_[i];
        const int64_t limit = 256 + int64_t(i);
        for (int32_t id : {a, b})
            MOE_REQUIRE(id >= 0 && id < limit, "tokenizer merge ", i, " [", a, ", ", b,
                        "] uses id ", id, ", which is not defined before it (ids must be in [0, ",
                        limit, "))");
        const auto [it, fresh] = rank_.emplace(pair_key(a, b), int32_t(i));
        MOE_REQUIRE(fresh, "tokenizer merge ", i, " [", a, ", ", b, "] repeats merge ", it->second);
        bytes_.push_back(bytes_[size_t(a)] + bytes_[size_t(b)]);
    }
}

int32_t BpeTokenizer::rank_of(int32_t a, int32_t b) const {
    const auto it = rank_.find(pair_key(a, b));
    return it == rank_.end() ? -1 : it->second;
}

BpeTokenizer BpeTokenizer::train(std::span<const std::string_view> texts, int64_t vocab_size,
                                 const Progress& progress) {
    MOE_REQUIRE(vocab_size >= 256, "tokenizer vocab_size must be >= 256 (the bytes), got ",
                vocab_size);
    // Distinct chunks and their frequencies. The fortunes train split gives 555k chunks but
    // only 45k distinct ones, which is what makes training fast.
    std::unordered_map<std::string_view, int64_t> chunk_count;
    for (std::string_view text : texts)
        for (std::string_view c : pretokenize(text)) ++chunk_count[c];
    std::vector<std::pair<std::string_view, int64_t>> distinct(chunk_count.begin(),
                                                               chunk_count.end());
    chunk_count.clear();
    // Sorted, so that word indices (and so the whole run) do not depend on hash order.
    std::sort(distinct.begin(), distinct.end());

    std::vector<std::vector<int32_t>> words(distinct.size());
    std::vector<int64_t> freq(distinct.size());
    std::unordered_map<uint64_t, PairInfo> pairs;
    for (size_t w = 0; w < distinct.size(); ++w) {
        const std::string_view s = distinct[w].first;
        freq[w] = distinct[w].second;
        words[w].reserve(s.size());
        for (char ch : s) words[w].push_back(static_cast<unsigned char>(ch));
        for (size_t i = 0; i + 1 < s.size(); ++i) {
            PairInfo& p = pairs[pair_key(words[w][i], words[w][i + 1])];
            p.count += freq[w];
            if (p.words.empty() || p.words.back() != int32_t(w)) p.words.push_back(int32_t(w));
        }
    }

    // Lazy max-heap: an entry whose count is stale (the pair lost occurrences since it was
    // pushed) is re-pushed with its current count when it surfaces. Counts of existing pairs
    // only ever fall (a merge creates pairs only with the new id), so the first entry that
    // matches its pair's count is the true maximum.
    std::priority_queue<Candidate> heap;
    for (const auto& [key, p] : pairs) heap.push({p.count, key});

    const int64_t wanted = vocab_size - 256;
    std::vector<Merge> merges;
    merges.reserve(size_t(wanted));
    std::vector<int32_t> merged;
    std::vector<uint64_t> fresh;  // pairs created by the current merge
    while (int64_t(merges.size()) < wanted) {
        uint64_t key = 0;
        int64_t count = 0;
        while (!heap.empty()) {
            const Candidate top = heap.top();
            heap.pop();
            const auto it = pairs.find(top.key);
            const int64_t now = it == pairs.end() ? 0 : it->second.count;
            if (now == top.count) {
                key = top.key, count = now;
                break;
            }
            if (now > 0) heap.push({now, top.key});
        }
        // A pair seen once compresses nothing worth a vocabulary slot.
        if (count < 2) break;
        const int32_t a = key_first(key), b = key_second(key);
        const int32_t id = int32_t(256 + merges.size());
        merges.emplace_back(a, b);

        const std::vector<int32_t> candidates = std::move(pairs[key].words);
        fresh.clear();
        for (int32_t w : candidates) {
            std::vector<int32_t>& sym = words[size_t(w)];
            const size_t n = sym.size();
            bool has = false;
            for (size_t i = 0; i + 1 < n && !has; ++i) has = sym[i] == a && sym[i + 1] == b;
            if (!has) continue;  // lost the pair to an earlier merge
            // Left to right, non-overlapping: "a a a" with (a, a) becomes "ab a", as the
            // encoder's heap (lowest position first among equal ranks) also does.
            merged.clear();
            for (size_t i = 0; i < n;) {
                if (i + 1 < n && sym[i] == a && sym[i + 1] == b) {
                    merged.push_back(id), i += 2;
                } else {
                    merged.push_back(sym[i++]);
                }
            }
            // Take the chunk's old pairs out and its new pairs in; the pairs that did not
            // change cancel. Only the new pairs (all with `id`) list this chunk afresh.
            const int64_t f = freq[size_t(w)];
            for (size_t i = 0; i + 1 < n; ++i) pairs[pair_key(sym[i], sym[i + 1])].count -= f;
            for (size_t i = 0; i + 1 < merged.size(); ++i) {
                const uint64_t k = pair_key(merged[i], merged[i + 1]);
                PairInfo& p = pairs[k];
                p.count += f;
                if (merged[i] == id || merged[i + 1] == id) {
                    if (p.words.empty()) fresh.push_back(k);
                    if (p.words.empty() || p.words.back() != w) p.words.push_back(w);
                }
            }
            sym.swap(merged);
        }
        pairs.erase(key);
        for (uint64_t k : fresh) heap.push({pairs[k].count, k});
        if (progress) progress(int64_t(merges.size()), wanted);
    }
    return BpeTokenizer(std::move(merges));
}

void BpeTokenizer::encode_chunk(std::string_view chunk, std::vector<int32_t>& out) const {
    MOE_CHECK(chunk.size() < (size_t(1) << 31), "BpeTokenizer::encode: a chunk of ", chunk.size(),
              " bytes without a space exceeds the 2 GiB limit");
    const int32_t n = int32_t(chunk.size());
    if (n <= 1 || merges_.empty()) {
        for (char ch : chunk) out.push_back(static_cast<unsigned char>(ch));
        return;
    }
    // Symbols as a linked list over positions; a merge keeps the left position and kills
    // the right one (id -1). Heap entries are (rank, left position, ids expected there);
    // an entry is stale when either id changed, which ids never undo since merges only
    // make larger ids.
    std::vector<int32_t> ids(chunk.size()), prev(chunk.size()), next(chunk.size());
    for (int32_t i = 0; i < n; ++i) {
        ids[i] = static_cast<unsigned char>(chunk[i]);
        prev[i] = i - 1;
        next[i] = i + 1;
    }
    struct Entry {
        int32_t rank, pos, a, b;
        bool operator<(const Entry& o) const {  // "lower priority than": min-heap by (rank, pos)
            return rank != o.rank ? rank > o.rank : pos > o.pos;
        }
    };
    std::priority_queue<Entry> heap;
    auto consider = [&](int32_t i) {
        if (i < 0 || next[i] >= n) return;
        const int32_t j = next[i];
        const int32_t r = rank_of(ids[i], ids[j]);
        if (r >= 0) heap.push({r, i, ids[i], ids[j]});
    };
    for (int32_t i = 0; i + 1 < n; ++i) consider(i);
    // Among equal ranks the leftmost goes first, and pairs a merge creates always rank
    // after it (they contain its new id), so this equals the textbook loop "merge every
    // occurrence of the lowest-ranked pair, left to right, until none is left".
    while (!heap.empty()) {
        const Entry e = heap.top();
        heap.pop();
        const int32_t i = e.pos, j = next[i];
        if (ids[i] != e.a || j >= n || ids[j] != e.b) continue;
        ids[i] = 256 + e.rank;
        ids[j] = -1;
        next[i] = next[j];
        if (next[j] < n) prev[next[j]] = i;
        if (prev[i] >= 0) consider(prev[i]);
        consider(i);
    }
    for (int32_t i = 0; i < n; i = next[i]) out.push_back(ids[i]);
}

std::vector<int32_t> BpeTokenizer::encode(std::string_view text) const {
    std::vector<int32_t> out;
    out.reserve(text.size() / 3);
    // Each distinct chunk is encoded once per call: on the fortunes train split 555k chunks
    // are 45k distinct ones. The cache holds (offset, length) into `out`.
    std::unordered_map<std::string_view, std::pair<size_t, size_t>> cache;
    for (std::string_view chunk : pretokenize(text)) {
        const auto it = cache.find(chunk);
        if (it != cache.end()) {
            const auto [at, len] = it->second;
            for (size_t k = 0; k < len; ++k) out.push_back(out[at + k]);
            continue;
        }
        const size_t at = out.size();
        encode_chunk(chunk, out);
        cache.emplace(chunk, std::make_pair(at, out.size() - at));
    }
    return out;
}

std::string BpeTokenizer::decode(std::span<const int32_t> ids) const {
    std::string out;
    size_t total = 0;
    for (int32_t id : ids) {
        MOE_CHECK(id >= 0 && id < vocab_size(), "BpeTokenizer::decode: id ", id,
                  " out of the vocabulary [0, ", vocab_size(), ")");
        total += bytes_[size_t(id)].size();
    }
    out.reserve(total);
    for (int32_t id : ids) out += bytes_[size_t(id)];
    return out;
}

const std::string& BpeTokenizer::token_bytes(int32_t id) const {
    MOE_CHECK(id >= 0 && id < vocab_size(), "BpeTokenizer::token_bytes: id ", id,
              " out of the vocabulary [0, ", vocab_size(), ")");
    return bytes_[size_t(id)];
}

std::string BpeTokenizer::to_json() const {
    std::string s =
        "{\"type\":\"bpe-bytes\",\"vocab_size\":" + std::to_string(vocab_size()) + ",\"merges\":[";
    for (size_t i = 0; i < merges_.size(); ++i) {
        if (i) s += ',';
        s += '[' + std::to_string(merges_[i].first) + ',' + std::to_string(merges_[i].second) + ']';
    }
    return s + "]}";
}

BpeTokenizer BpeTokenizer::from_json(const std::string& text, const std::string& source) {
    const nlohmann::json j = io::parse_json(text, source);
    MOE_REQUIRE(j.is_object(), source, ": expected a JSON object, got ", j.type_name());
    for (const auto& [key, value] : j.items())
        MOE_REQUIRE(key == "type" || key == "vocab_size" || key == "merges", source,
                    ": unknown key '", excerpt(key), "'");
    for (const char* key : {"type", "vocab_size", "merges"})
        MOE_REQUIRE(j.contains(key), source, ": missing key '", key, "'");
    MOE_REQUIRE(j["type"].is_string() && j["type"].get<std::string>() == "bpe-bytes", source,
                ": 'type' must be \"bpe-bytes\", got ", io::json_excerpt(j["type"]));
    const nlohmann::json& vs = j["vocab_size"];
    MOE_REQUIRE(vs.is_number_integer(), source, ": 'vocab_size' must be an integer, got ",
                io::json_excerpt(vs));
    const int64_t vocab_size = vs.get<int64_t>();
    MOE_REQUIRE(vocab_size >= 256, source, ": 'vocab_size' must be >= 256 (the bytes), got ",
                vocab_size);
    const nlohmann::json& m = j["merges"];
    MOE_REQUIRE(m.is_array(), source, ": 'merges' must be an array, got ", m.type_name());
    MOE_REQUIRE(int64_t(m.size()) == vocab_size - 256, source, ": 'vocab_size' ", vocab_size,
                " needs ", vocab_size - 256, " merges, got ", m.size());
    std::vector<Merge> merges;
    merges.reserve(m.size());
    for (size_t i = 0; i < m.size(); ++i) {
        const nlohmann::json& p = m[i];
        MOE_REQUIRE(
            p.is_array() && p.size() == 2 && p[0].is_number_integer() && p[1].is_number_integer(),
            source, ": merge ", i, " must be a pair of integers [a, b], got ", io::json_excerpt(p));
        const int64_t a = p[0].get<int64_t>(), b = p[1].get<int64_t>();
        // Out of int32 range is certainly undefined; the constructor checks the rest.
        for (int64_t id : {a, b})
            MOE_REQUIRE(id >= INT32_MIN && id <= INT32_MAX, source, ": merge ", i, " [", a, ", ", b,
                        "] uses id ", id, ", which is not defined before it");
        merges.emplace_back(int32_t(a), int32_t(b));
    }
    return BpeTokenizer(std::move(merges));  // checks ids and repeats
}

}  // namespace moe::lm
