// Exit statuses of every flexmon command (sysexits.h), and the one mapping
// from an Error's kind to a status, so a command line never picks a status by
// reading an error's message.
#pragma once

#include "common/result.h"

namespace flexmon {

constexpr int kExitOk = 0;
constexpr int kExitFailure = 1;       // failed for a reason none below names
constexpr int kExitUsage = 64;        // EX_USAGE: a bad command line or argument
constexpr int kExitNoInput = 66;      // EX_NOINPUT: what was named does not exist
constexpr int kExitUnavailable = 69;  // EX_UNAVAILABLE: a server or database is out of reach
constexpr int kExitIoError = 74;      // EX_IOERR: a local file or system call failed
constexpr int kExitTempFail = 75;     // EX_TEMPFAIL: stopped early; running again may work
constexpr int kExitNoPerm = 77;       // EX_NOPERM: a credential does not verify
constexpr int kExitConfig = 78;       // EX_CONFIG: the config file is wrong

// The exit status for a command that ends with `code`.
constexpr int exit_status(ErrorCode code) {
  switch (code) {
    case ErrorCode::kInvalidInput:
      return kExitUsage;
    case ErrorCode::kNotFound:
      return kExitNoInput;
    case ErrorCode::kDenied:
      return kExitNoPerm;
    case ErrorCode::kUnavailable:
      return kExitUnavailable;
    case ErrorCode::kIoError:
      return kExitIoError;
    case ErrorCode::kCancelled:
      return kExitTempFail;
  }
  return kExitFailure;
}

}  // namespace flexmon
