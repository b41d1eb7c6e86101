// Sub-commands of gistmem-cli. Each reads its flags (cli/main.cc defines them), writes its
// result to stdout and returns the process exit code; errors are thrown as exceptions.
#pragma once

namespace gistmem::cli {

int RunLogits();
int RunGenerate();
int RunTokenize();
int RunDetokenize();
int RunDevices();

}  // namespace gistmem::cli
