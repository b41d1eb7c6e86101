// gistmem-cli: look inside a checkpoint without the service.
//   gistmem-cli logits     --model DIR --tokens 1,2,3
//   gistmem-cli generate   --model DIR --prompt TEXT [--max_tokens N --temperature T --seed S]
//   gistmem-cli tokenize   --tokenizer PATH/tokenizer.json   < text
//   gistmem-cli detokenize --tokenizer PATH/tokenizer.json   < {"ids": [...]}
//   gistmem-cli devices
#include <absl/flags/flag.h>
#include <absl/flags/parse.h>
#include <absl/flags/usage.h>

#include <cstdio>
#include <exception>
#include <map>
#include <string>

#include "clients/cpp/cli/commands.h"
#include "clients/cpp/common/dashed_flags.h"
#include "clients/cpp/common/help_flags.h"

ABSL_FLAG(std::string, model, "", "checkpoint directory (config.json, *.safetensors)");
ABSL_FLAG(std::string, tokenizer, "", "tokenizer.json (default: the one in --model)");
ABSL_FLAG(std::string, tokens, "", "comma-separated token ids, for logits");
ABSL_FLAG(std::string, prompt, "", "prompt text, for generate");
ABSL_FLAG(bool, chat, false, "wrap the prompt in the model's chat template as a user turn");
ABSL_FLAG(int64_t, max_tokens, 64, "most tokens to generate");
ABSL_FLAG(double, temperature, 0.0, "sampling temperature; 0 is greedy");
ABSL_FLAG(int32_t, top_k, 0, "sample among the k most likely tokens; 0 is off");
ABSL_FLAG(double, top_p, 1.0, "nucleus sampling mass; 1 is off");
ABSL_FLAG(double, repetition_penalty, 1.0, "penalty for tokens already seen; 1 is off");
ABSL_FLAG(uint64_t, seed, 0, "random seed for sampling");
ABSL_FLAG(int32_t, threads, 0, "CPU threads; 0 uses every core");
ABSL_FLAG(std::string, device, "auto",
          "Engine to run the model on: cpu, cuda (cuda:N for GPU N) or auto: cuda when this "
          "binary has the CUDA backend and a CUDA device is present, else cpu");
ABSL_FLAG(bool, json, false, "generate: print one JSON object instead of streaming text");

int main(int argc, char** argv) {
  absl::SetProgramUsageMessage("gistmem-cli <logits|generate|tokenize|detokenize|devices> [flags]");
  gistmem::clients::HelpListsFlagsFrom("clients/cpp/cli/");
  gistmem::clients::DashedFlags flags(argc, argv);
  const std::vector<char*> positional = absl::ParseCommandLine(flags.argc(), flags.argv());
  const std::map<std::string, int (*)()> commands = {{"logits", gistmem::cli::RunLogits},
                                                     {"generate", gistmem::cli::RunGenerate},
                                                     {"tokenize", gistmem::cli::RunTokenize},
                                                     {"detokenize", gistmem::cli::RunDetokenize},
                                                     {"devices", gistmem::cli::RunDevices}};
  if (positional.size() != 2 || !commands.contains(positional[1])) {
    std::fprintf(stderr, "%s\n", absl::ProgramUsageMessage().data());
    return 2;
  }
  try {
    return commands.at(positional[1])();
  } catch (const std::exception& e) {
    std::fprintf(stderr, "gistmem-cli %s: %s\n", positional[1], e.what());
    return 1;
  }
}
