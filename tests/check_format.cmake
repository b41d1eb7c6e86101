# Fails when any of our C++/CUDA/proto sources differs from clang-format's output.
file(GLOB_RECURSE sources
  ${ROOT}/model/*.h ${ROOT}/model/*.cc ${ROOT}/model/*.cu
  ${ROOT}/memory/*.h ${ROOT}/memory/*.cc ${ROOT}/store/*.h ${ROOT}/store/*.cc
  ${ROOT}/service/*.h ${ROOT}/service/*.cc ${ROOT}/clients/*.h ${ROOT}/clients/*.cc
  ${ROOT}/bench/*.h ${ROOT}/bench/*.cc ${ROOT}/tests/*.h ${ROOT}/tests/*.cc ${ROOT}/proto/*.proto)
execute_process(COMMAND ${CLANG_FORMAT} --dry-run --Werror ${sources}
  RESULT_VARIABLE result ERROR_VARIABLE errors)
if(NOT result EQUAL 0)
  message(FATAL_ERROR "clang-format differences (run clang-format -i on these):\n${errors}")
endif()
