// gmock matchers for the errors peel throws: EXPECT_THAT(callable, ThrowsErrorWith("a", "b"))
// passes when calling it throws a peel::Error whose message contains every one of the parts.
#pragma once

#include <gmock/gmock.h>

#include <string>

#include "tensor/error.h"

namespace peel::testing {

// ThrowsMessage<peel::Error>(AllOf(HasSubstr(part)...)): a failure prints the whole message.
template <class... Parts>
auto ThrowsErrorWith(const Parts&... parts) {
  return ::testing::ThrowsMessage<peel::Error>(::testing::AllOf(::testing::HasSubstr(std::string(parts))...));
}

}  // namespace peel::testing
