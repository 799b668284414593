// Where a row's admitted tile lanes go.
//
// TopKSink keeps, per row, a small buffer of candidates. Until the buffer first fills the row
// threshold is -inf; then it is cut to the k best by (value desc, latent index asc) and the
// row threshold becomes the k-th value, so later tiles are rejected in registers by one compare. Latents arrive in ascending index order, so a later
// value EQUAL to the threshold loses the tie and "value > threshold" is the exact admission
// rule. Only positive values are admitted at all: relu zeroes the others and zeros are omitted.
//
// ListSink (standard, jumprelu) keeps every admitted lane; rows come out index-sorted for free.
#pragma once
#include <algorithm>
#include <cstdint>
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

// Sinks are reused across tasks by each thread (reset() keeps capacity): fresh allocations of
// a few hundred KiB per task went through mmap and page faults, ~5% of the encode.
//
// A row's buffer only ever receives latents in ascending index order and compaction is stable,
// so it stays index-sorted: no sort at the end, and among equal values the earlier (lower
// index) entries are the ones kept.
class TopKSink final : public TileSink {
 public:
  void reset(int rows, int64_t k) {
    rows_ = rows;
    k_ = k;
    // Slack of >= 2k (and >= 128) between cuts: each cut costs O(cap), so the total cost stays
    // proportional to the number of admissions.
    cap_ = k + std::max<int64_t>(2 * k, 128) + kPanel;
    values_.resize(static_cast<size_t>(rows) * cap_);
    indices_.resize(static_cast<size_t>(rows) * cap_);
    count_.assign(rows, 0);
    thresholds_.assign(rows, -std::numeric_limits<float>::infinity());
    row_threshold = thresholds_.data();
  }

  void push(int row, uint32_t mask, const float* v, int64_t base) override {
    // Cut when full, and once early (at 2k candidates) so a real threshold exists after a few
    // panels instead of after the whole buffer has filled with everything positive.
    const int64_t pending = count_[row] + __builtin_popcount(mask);
    if (pending > cap_ || (count_[row] >= 2 * k_ && thresholds_[row] == -std::numeric_limits<float>::infinity()))
      cut(row);
    float* vals = values_.data() + static_cast<size_t>(row) * cap_;
    int32_t* idx = indices_.data() + static_cast<size_t>(row) * cap_;
    const float thr = thresholds_[row];
    int64_t n = count_[row];
    while (mask != 0) {
      const int j = __builtin_ctz(mask);
      mask &= mask - 1;
      if (v[j] > thr) {  // the threshold may have risen in cut()
        vals[n] = v[j];
        idx[n] = static_cast<int32_t>(base + j);
        ++n;
      }
    }
    count_[row] = n;
  }

  void finish(TaskCodes& out) {
    out.counts.reserve(out.counts.size() + rows_);
    out.indices.reserve(out.indices.size() + rows_ * k_);
    out.values.reserve(out.values.size() + rows_ * k_);
    for (int r = 0; r < rows_; ++r) {
      if (count_[r] > k_) cut(r);
      const float* vals = values_.data() + static_cast<size_t>(r) * cap_;
      const int32_t* idx = indices_.data() + static_cast<size_t>(r) * cap_;
      out.counts.push_back(static_cast<uint32_t>(count_[r]));
      out.indices.insert(out.indices.end(), idx, idx + count_[r]);
      out.values.insert(out.values.end(), vals, vals + count_[r]);
    }
  }

 private:
  // Keeps the k best of the row (value desc, index asc) in index order; raises the threshold
  // to the k-th value. Selection runs on a float copy (fast compares), compaction is stable.
  void cut(int row) {
    float* vals = values_.data() + static_cast<size_t>(row) * cap_;
    int32_t* idx = indices_.data() + static_cast<size_t>(row) * cap_;
    const int64_t n = count_[row];
    scratch_.assign(vals, vals + n);
    std::nth_element(scratch_.begin(), scratch_.begin() + (k_ - 1), scratch_.end(), std::greater<float>());
    const float t = scratch_[k_ - 1];
    int64_t above = 0;
    for (int64_t i = 0; i < n; ++i) above += vals[i] > t;
    int64_t ties_kept = k_ - above;  // entries equal to t that fit, lowest indices first
    int64_t w = 0;
    for (int64_t i = 0; i < n; ++i) {
      const bool keep = vals[i] > t || (vals[i] == t && ties_kept-- > 0);
      vals[w] = vals[i];
      idx[w] = idx[i];
      w += keep;
    }
    count_[row] = w;
    thresholds_[row] = t;
  }

  int rows_ = 0;
  int64_t k_ = 0, cap_ = 0;
  std::vector<float> values_;
  std::vector<int32_t> indices_;
  std::vector<int64_t> count_;
  std::vector<float> thresholds_;
  std::vector<float> scratch_;
};

class ListSink final : public TileSink {
 public:
  void reset(int rows) {
    rows_ = rows;
    thresholds_.assign(rows, -std::numeric_limits<float>::infinity());
    if (lists_.size() < static_cast<size_t>(rows)) lists_.resize(rows);
    for (auto& l : lists_) l.clear();
    row_threshold = thresholds_.data();
  }

  void push(int row, uint32_t mask, const float* v, int64_t base) override {
    auto& list = lists_[row];
    while (mask != 0) {
      const int j = __builtin_ctz(mask);
      mask &= mask - 1;
      list.emplace_back(v[j], static_cast<int32_t>(base + j));
    }
  }

  void finish(TaskCodes& out) {
    for (int r = 0; r < rows_; ++r) {
      out.counts.push_back(static_cast<uint32_t>(lists_[r].size()));
      for (const auto& [v, i] : lists_[r]) {
        out.indices.push_back(i);
        out.values.push_back(v);
      }
    }
  }

 private:
  int rows_ = 0;
  std::vector<float> thresholds_;
  std::vector<std::vector<std::pair<float, int32_t>>> lists_;
};

}  // namespace saekit::cpu
