// TensorBoard event files, written without TensorFlow.
//
// An event file is a sequence of TFRecords:
//   uint64 length (little-endian), uint32 masked_crc32c(length bytes),
//   `length` bytes of data,         uint32 masked_crc32c(data),
// where each record's data is an `Event` protocol buffer, encoded here by hand:
//   Event   { double wall_time = 1; int64 step = 2; string file_version = 3;
//             Summary summary = 5; }
//   Summary { repeated Value value = 1; }
//   Value   { string tag = 1; float simple_value = 2; }
// The first record carries file_version "brain.Event:2", as TensorFlow's writer does; each
// add_scalar is then one record. TensorBoard reads every file in a run directory whose name
// contains "tfevents", in name order, so a resumed run simply adds a file beside the old.
#pragma once

#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <string>
#include <utility>
#include <vector>

namespace moe::train {

// CRC-32C (Castagnoli, reflected polynomial 0x82F63B78), as in RFC 3720 (iSCSI), computed
// with a 256-entry table. `crc` continues an earlier result: crc32c(b, m, crc32c(a, n))
// equals the CRC of a followed by b.
uint32_t crc32c(const void* data, size_t n, uint32_t crc = 0);
// TFRecord's mask, which keeps a CRC of data that itself holds CRCs well distributed:
// ((crc >> 15) | (crc << 17)) + 0xa282ead8.
uint32_t masked_crc32c(const void* data, size_t n);

class TensorBoardWriter {
  public:
    // Creates `dir` if needed and the file events.out.tfevents.<unix time>.<hostname> in it
    // (with a ".<n>" suffix when a writer of the same second already made that name), then
    // writes the file_version record.
    explicit TensorBoardWriter(const std::string& dir);
    ~TensorBoardWriter();  // flushes and closes
    TensorBoardWriter(const TensorBoardWriter&) = delete;
    TensorBoardWriter& operator=(const TensorBoardWriter&) = delete;

    // One Event at the current wall time; TensorBoard stores the value as a float.
    void add_scalar(const std::string& tag, double value, int64_t step);
    // Hands buffered records to the operating system, so TensorBoard sees them.
    void flush();
    const std::string& path() const { return path_; }

  private:
    void write_record(const std::string& data);
    std::string path_;
    std::FILE* file_ = nullptr;
};

// A decoded Event, for tests and tools.
struct TensorBoardEvent {
    double wall_time = 0;
    int64_t step = 0;
    std::string file_version;                           // empty unless set
    std::vector<std::pair<std::string, float>> values;  // (tag, simple_value)
};

// Reads an event file, checking both CRCs of every record; a truncated or corrupt file is
// a moe::Error naming the file, the record and the byte offset.
std::vector<TensorBoardEvent> read_tensorboard_events(const std::string& path);

}  // namespace moe::train
