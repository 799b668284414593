// Where a row's admitted tile lanes go.
//
// TopKSink keeps, per row, a small buffer of candidates. While fewer than k positive values
// have been seen the row threshold is -inf; when the buffer fills, it is cut to the k best by
// (value desc, latent index asc) and the row threshold becomes the k-th value, so later tiles
// are rejected in registers by one compare. Latents arrive in ascending index order, so a later
// value EQUAL to the threshold loses the tie and "value > threshold" is the exact admission
// rule. Only positive values are admitted at all: relu zeroes the others and zeros are omitted.
//
// ListSink (standard, jumprelu) keeps every admitted lane; rows come out index-sorted for free.
#pragma once
#include <algorithm>
#include <cstdint>
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

// Orders candidates best first; exact ties go to the lower latent index.
inline bool better(const std::pair<float, int32_t>& a, const std::pair<float, int32_t>& b) {
  return a.first > b.first || (a.first == b.first && a.second < b.second);
}

// Keeps the k best of `cand` and sorts them by latent index.
inline void keep_top_k_sorted(std::vector<std::pair<float, int32_t>>& cand, int64_t k) {
  if (static_cast<int64_t>(cand.size()) > k) {
    std::nth_element(cand.begin(), cand.begin() + (k - 1), cand.end(), better);
    cand.resize(k);
  }
  std::sort(cand.begin(), cand.end(), [](const auto& a, const auto& b) { return a.second < b.second; });
}

class TopKSink final : public TileSink {
 public:
  TopKSink(int rows, int64_t k) : rows_(rows), k_(k), cap_(k + std::max<int64_t>(k, 64) + kPanel) {
    values_.resize(static_cast<size_t>(rows) * cap_);
    indices_.resize(static_cast<size_t>(rows) * cap_);
    count_.assign(rows, 0);
    thresholds_.assign(rows, -std::numeric_limits<float>::infinity());
    row_threshold = thresholds_.data();
  }

  void push(int row, uint32_t mask, const float* v, int64_t base) override {
    if (count_[row] + __builtin_popcount(mask) > cap_) shrink(row);
    float* vals = values_.data() + static_cast<size_t>(row) * cap_;
    int32_t* idx = indices_.data() + static_cast<size_t>(row) * cap_;
    const float thr = thresholds_[row];
    int64_t n = count_[row];
    while (mask != 0) {
      const int j = __builtin_ctz(mask);
      mask &= mask - 1;
      if (v[j] > thr) {  // the threshold may have risen in shrink()
        vals[n] = v[j];
        idx[n] = static_cast<int32_t>(base + j);
        ++n;
      }
    }
    count_[row] = n;
  }

  void finish(TaskCodes& out) {
    std::vector<std::pair<float, int32_t>> cand;
    for (int r = 0; r < rows_; ++r) {
      gather(r, cand);
      keep_top_k_sorted(cand, k_);
      out.counts.push_back(static_cast<uint32_t>(cand.size()));
      for (const auto& [v, i] : cand) {
        out.indices.push_back(i);
        out.values.push_back(v);
      }
    }
  }

 private:
  void gather(int row, std::vector<std::pair<float, int32_t>>& cand) const {
    const float* vals = values_.data() + static_cast<size_t>(row) * cap_;
    const int32_t* idx = indices_.data() + static_cast<size_t>(row) * cap_;
    cand.clear();
    for (int64_t i = 0; i < count_[row]; ++i) cand.emplace_back(vals[i], idx[i]);
  }

  void shrink(int row) {
    gather(row, scratch_);
    std::nth_element(scratch_.begin(), scratch_.begin() + (k_ - 1), scratch_.end(), better);
    float* vals = values_.data() + static_cast<size_t>(row) * cap_;
    int32_t* idx = indices_.data() + static_cast<size_t>(row) * cap_;
    for (int64_t i = 0; i < k_; ++i) {
      vals[i] = scratch_[i].first;
      idx[i] = scratch_[i].second;
    }
    count_[row] = k_;
    thresholds_[row] = scratch_[k_ - 1].first;
  }

  int rows_;
  int64_t k_, cap_;
  std::vector<float> values_;
  std::vector<int32_t> indices_;
  std::vector<int64_t> count_;
  std::vector<float> thresholds_;
  std::vector<std::pair<float, int32_t>> scratch_;
};

class ListSink final : public TileSink {
 public:
  explicit ListSink(int rows) : rows_(rows), thresholds_(rows, -std::numeric_limits<float>::infinity()) {
    lists_.resize(rows);
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
  int rows_;
  std::vector<float> thresholds_;
  std::vector<std::vector<std::pair<float, int32_t>>> lists_;
};

}  // namespace saekit::cpu
