// Every heavy native call runs as one of these: Execute() on libuv's pool, never touching
// N-API, catching everything; the Promise rejects with an Error whose message is the native
// detail and whose `code` says which kind (SAEKIT_INPUT carries the row and column).
#pragma once
#include <napi.h>

#include <exception>
#include <functional>
#include <new>
#include <string>

#include "../error.h"

namespace saekit::napi {

class PromiseWorker : public Napi::AsyncWorker {
 public:
  explicit PromiseWorker(Napi::Env env) : Napi::AsyncWorker(env), deferred_(Napi::Promise::Deferred::New(env)) {}

  Napi::Promise Promise() { return deferred_.Promise(); }

 protected:
  // Runs off the main thread. Throw saekit::Error / InputError / std::exception to fail.
  virtual void Run() = 0;
  // Runs on the main thread after Run() succeeded.
  virtual Napi::Value Result(Napi::Env env) = 0;
  // Runs on the main thread once Run() has ended either way, before the Promise settles.
  virtual void Settled() {}

 private:
  void Execute() override {
    try {
      Run();
    } catch (const Cancelled& e) {
      code_ = "SAEKIT_ABORTED";
      SetError(e.what());
    } catch (const InputError& e) {
      code_ = "SAEKIT_INPUT";
      row_ = e.row;
      col_ = e.col;
      SetError(e.what());
    } catch (const std::bad_alloc&) {
      code_ = "SAEKIT_OUT_OF_MEMORY";
      SetError("out of memory");
    } catch (const std::exception& e) {
      code_ = "SAEKIT_NATIVE";
      SetError(e.what());
    } catch (...) {
      code_ = "SAEKIT_NATIVE";
      SetError("unknown native error");
    }
  }

  void OnOK() override {
    Napi::Env env = Env();
    Napi::HandleScope scope(env);
    Settled();
    try {
      deferred_.Resolve(Result(env));
    } catch (const Napi::Error& e) {
      deferred_.Reject(e.Value());
    }
  }

  void OnError(const Napi::Error& e) override {
    Napi::Env env = Env();
    Napi::HandleScope scope(env);
    Settled();
    Napi::Object err = e.Value();
    err.Set("code", code_);
    if (row_ >= 0) {
      err.Set("row", Napi::Number::New(env, static_cast<double>(row_)));
      err.Set("col", Napi::Number::New(env, static_cast<double>(col_)));
    }
    deferred_.Reject(err);
  }

  Napi::Promise::Deferred deferred_;
  std::string code_;
  long long row_ = -1, col_ = -1;
};

// A worker from two lambdas, for small calls.
class LambdaWorker final : public PromiseWorker {
 public:
  LambdaWorker(Napi::Env env, std::function<void()> run, std::function<Napi::Value(Napi::Env)> result,
               std::function<void()> settled = nullptr)
      : PromiseWorker(env), run_(std::move(run)), result_(std::move(result)), settled_(std::move(settled)) {}

 protected:
  void Run() override { run_(); }
  Napi::Value Result(Napi::Env env) override { return result_(env); }
  void Settled() override {
    if (settled_) settled_();
  }

 private:
  std::function<void()> run_;
  std::function<Napi::Value(Napi::Env)> result_;
  std::function<void()> settled_;
};

inline Napi::Promise queue(LambdaWorker* w) {
  Napi::Promise p = w->Promise();
  w->Queue();
  return p;
}

}  // namespace saekit::napi
