// The two TileSinks: where a block's admitted tile lanes are staged and reduced.
//
// TopKSink: until a row's staging area first holds 2k candidates its threshold is -inf; then
// (and whenever the area fills) it is cut to the k best by (value desc, latent index asc) and
// the row threshold becomes the k-th value, so later tiles are rejected in registers by one
// compare. Candidates arrive in ascending latent order and cuts compact stably, so a row stays
// index-sorted: no sort at the end, and among equal values the lower indices are kept. A later
// value EQUAL to the threshold loses its tie to every kept entry, so "value > threshold" is the
// exact admission rule. Only positive values are admitted at all (relu; zeros are omitted).
//
// ListSink (standard, jumprelu): every admitted lane is kept; a full staging row is moved to
// the row's list.
//
// Sinks are reused across tasks by each thread (reset() keeps capacity): fresh allocations of a
// few hundred KiB per task went through mmap and page faults. Footprint matters: the staging
// area shares L2 with the packed A block and the W_enc stream, so the slack stays modest.
#pragma once
#include <algorithm>
#include <cstdint>
#include <cstring>
#include <functional>
#include <limits>
#include <utility>
#include <vector>

#include "encode_kernels.h"

namespace saekit::cpu {

// Codes of one task (a block of rows x a range of latents), rows in order.
struct TaskCodes {
  std::vector<uint32_t> counts;
  std::vector<int32_t> indices;
  std::vector<float> values;
};

// Orders candidates best first; exact ties go to the lower latent index. A lambda object (not
// a function pointer) so std::nth_element inlines it.
constexpr auto better = [](const std::pair<float, int32_t>& a, const std::pair<float, int32_t>& b) {
  return a.first > b.first || (a.first == b.first && a.second < b.second);
};

// Keeps the k best of `cand` and sorts them by latent index.
inline void keep_top_k_sorted(std::vector<std::pair<float, int32_t>>& cand, int64_t k) {
  if (static_cast<int64_t>(cand.size()) > k) {
    std::nth_element(cand.begin(), cand.begin() + (k - 1), cand.end(), better);
    cand.resize(k);
  }
  std::sort(cand.begin(), cand.end(), [](const auto& a, const auto& b) { return a.second < b.second; });
}

// Staging storage shared by both sinks: rows x stride values and indices, counts, limits.
class StagedSink : public TileSink {
 protected:
  void stage(int rows, int64_t capacity) {
    rows_ = rows;
    stride = capacity + kPanel;  // a kernel may write kPanel entries past a count <= capacity
    values_.resize(static_cast<size_t>(rows) * stride);
    indices_.resize(static_cast<size_t>(rows) * stride);
    counts_.assign(rows, 0);
    limits_.assign(rows, capacity);
    thresholds_.assign(rows, -std::numeric_limits<float>::infinity());
    values = values_.data();
    indices = indices_.data();
    count = counts_.data();
    limit = limits_.data();
    row_threshold = thresholds_.data();
  }

  int rows_ = 0;
  std::vector<float> values_;
  std::vector<int32_t> indices_;
  std::vector<int64_t> counts_, limits_;
  std::vector<float> thresholds_;
};

class TopKSink final : public StagedSink {
 public:
  // hints (may be null): per-row starting thresholds, a guess at a value below the row's k-th
  // largest. A hinted row is only trustworthy if at least k values beat its hint (then every
  // top-k value did and was kept); complete() says whether it did.
  void reset(int rows, int64_t k, const float* hints = nullptr) {
    k_ = k;
    capacity_ = k + std::max<int64_t>(k, 64);
    stage(rows, capacity_);
    for (auto& l : limits_) l = 2 * k - 1;  // first cut early, at 2k candidates
    hinted_.assign(rows, 0);
    if (hints != nullptr) {
      for (int r = 0; r < rows; ++r) {
        if (hints[r] > 0.0f) {
          thresholds_[r] = hints[r];
          hinted_[r] = 1;
        }
      }
    }
  }

  void flush(int row) override {
    cut(row);
    limits_[row] = capacity_;
  }

  // Cuts the row to its final k (call once per row after the kernel).
  void finalize(int row) {
    if (counts_[row] > k_) cut(row);
  }

  bool complete(int row) const { return !hinted_[row] || counts_[row] >= k_; }

  // The row's k-th largest value after finalize(), or 0 when it has fewer than k entries.
  float kth(int row) const {
    if (counts_[row] < k_) return 0.0f;
    const float* v = values_.data() + row * stride;
    return *std::min_element(v, v + counts_[row]);
  }

  int64_t entries(int row) const { return counts_[row]; }

  void emit(int row, TaskCodes& out) const {
    const float* v = values_.data() + row * stride;
    const int32_t* i = indices_.data() + row * stride;
    out.counts.push_back(static_cast<uint32_t>(counts_[row]));
    out.indices.insert(out.indices.end(), i, i + counts_[row]);
    out.values.insert(out.values.end(), v, v + counts_[row]);
  }

  void finish(TaskCodes& out) {
    for (int r = 0; r < rows_; ++r) {
      finalize(r);
      emit(r, out);
    }
  }

 private:
  // Keeps the k best of the row in index order and raises its threshold to the k-th value.
  // Admitted values are all > 0, and positive floats order like their bit patterns, so the
  // k-th largest is found by a binary search over bit patterns with branch-free counting
  // passes (vectorized) instead of nth_element, whose partitioning branches mispredict about
  // half the time. Compaction is stable and branch-free.
  void cut(int row) {
    float* v = values_.data() + row * stride;
    int32_t* idx = indices_.data() + row * stride;
    const int64_t n = counts_[row];
    if (n <= k_) return;
    const int32_t* bits = reinterpret_cast<const int32_t*>(v);
    int32_t lo = bits[0], hi = bits[0];
    for (int64_t i = 1; i < n; ++i) {
      lo = std::min(lo, bits[i]);
      hi = std::max(hi, bits[i]);
    }
    // Largest b with count(bits >= b) >= k: that b is the k-th largest value's pattern.
    while (lo < hi) {
      const int32_t mid = lo + static_cast<int32_t>((static_cast<int64_t>(hi) - lo + 1) / 2);
      int64_t c = 0;
      for (int64_t i = 0; i < n; ++i) c += bits[i] >= mid;
      if (c >= k_) lo = mid;
      else hi = mid - 1;
    }
    const int32_t t = lo;
    int64_t above = 0;
    for (int64_t i = 0; i < n; ++i) above += bits[i] > t;
    int64_t ties_kept = k_ - above;  // entries equal to t that fit, lowest indices first
    int64_t w = 0;
    for (int64_t i = 0; i < n; ++i) {
      const int32_t b = bits[i];
      const bool tie = b == t;
      const bool keep = b > t || (tie && ties_kept > 0);
      ties_kept -= tie & keep;
      v[w] = v[i];
      idx[w] = idx[i];
      w += keep;
    }
    counts_[row] = w;
    float threshold;
    std::memcpy(&threshold, &t, sizeof threshold);
    thresholds_[row] = threshold;
  }

  int64_t k_ = 0, capacity_ = 0;
  std::vector<uint8_t> hinted_;
};

class ListSink final : public StagedSink {
 public:
  void reset(int rows) {
    stage(rows, 256);
    if (lists_.size() < static_cast<size_t>(rows)) lists_.resize(rows);
    for (auto& l : lists_) l.clear();
  }

  void flush(int row) override {
    const float* v = values_.data() + row * stride;
    const int32_t* i = indices_.data() + row * stride;
    for (int64_t e = 0; e < counts_[row]; ++e) lists_[row].emplace_back(v[e], i[e]);
    counts_[row] = 0;
  }

  void finish(TaskCodes& out) {
    for (int r = 0; r < rows_; ++r) {
      flush(r);
      out.counts.push_back(static_cast<uint32_t>(lists_[r].size()));
      for (const auto& [v, i] : lists_[r]) {
        out.indices.push_back(i);
        out.values.push_back(v);
      }
    }
  }

 private:
  std::vector<std::vector<std::pair<float, int32_t>>> lists_;
};

}  // namespace saekit::cpu
