// Wraps a turn's observer so that the turn is measured and logged as it runs: time to first
// token (from Submit to the first delta), inter-token latency (each delta's gap spread over
// its tokens), read / generated / cached tokens, and one "turn" event when it ends (tenant,
// session id, turn index, status, finish reason, timings; the message and reply text only
// with --log_content). Events pass on to `observer` unchanged.
//
//   observer = MeasureTurn(request, std::move(observer));   // in TurnExecutor::Submit
#pragma once

#include <memory>

#include "service/turn_executor.h"

namespace gistmem::service {

std::shared_ptr<TurnObserver> MeasureTurn(const TurnRequest& request,
                                          std::shared_ptr<TurnObserver> observer);

}  // namespace gistmem::service
