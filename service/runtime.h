// What the parts of the service share, made once at start-up by service/server.cc.
#pragma once

#include <cstdint>
#include <string>

#include "model/engine.h"
#include "model/tokenizer/tokenizer.h"
#include "service/config.h"
#include "service/document_registry.h"
#include "service/policy_resolver.h"
#include "service/scheduler.h"
#include "service/turn_tokens.h"
#include "service/worker_pool.h"
#include "store/store.h"

namespace gistmem::service {

// Auth and tenants arrive later; every session lives under this tenant until then.
inline constexpr std::string_view kDefaultTenant = "default";

struct ServiceRuntime {
  const ServerConfig& config;
  model::Engine& engine;  // the model on its device, and the KV pool
  const model::Tokenizer& tokenizer;
  const TurnTokens& turn_tokens;
  // "<model_type>-<hash>" of model/fingerprint.h; stored with every session and KV segment.
  const std::string& model_fingerprint;
  store::Store& store;
  Scheduler& scheduler;
  WorkerPool& workers;
  // Resolves sessions' memory policies against the server's defaults and the model.
  const PolicyResolver& policies;
  // Shared documents, one copy in memory each.
  DocumentRegistry& documents;
  // limits.max_session_tokens, or the model's context length when that is 0 or larger.
  int64_t max_session_tokens = 0;
};

}  // namespace gistmem::service
