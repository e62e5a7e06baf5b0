# In a MOE_SANITIZE build (make test-asan) every test, test_safetensors included, already
# runs under AddressSanitizer, so the second copy below would only add build time.
if(MOE_SANITIZE)
  return()
endif()

# test_safetensors and test_safetensors_hostile built a second time, as one program, with
# AddressSanitizer, so that every malformed-file test and the corruption sweep also run with
# out-of-bounds and use-after-free detection. The sanitizer must cover the parser itself, so the few
# sources it needs (src/core, src/io) are compiled into the executable with the flags,
# rather than linked from the uninstrumented libmoe.
file(GLOB MOE_ASAN_SOURCES CONFIGURE_DEPENDS
     ${PROJECT_SOURCE_DIR}/src/core/*.cpp
     ${PROJECT_SOURCE_DIR}/src/io/*.cpp)
add_executable(test_safetensors_asan
  ${CMAKE_CURRENT_SOURCE_DIR}/test_safetensors.cpp
  ${CMAKE_CURRENT_SOURCE_DIR}/test_safetensors_hostile.cpp
  ${CMAKE_CURRENT_SOURCE_DIR}/support/test_support.cpp
  ${MOE_ASAN_SOURCES})
target_include_directories(test_safetensors_asan PRIVATE
  ${PROJECT_SOURCE_DIR}/src ${CMAKE_CURRENT_SOURCE_DIR}/support)
# -O1 -g: readable ASan stack traces at a fraction of the -O0 run time.
target_compile_options(test_safetensors_asan PRIVATE
  -fsanitize=address -fno-omit-frame-pointer -O1 -g)
target_link_options(test_safetensors_asan PRIVATE -fsanitize=address)
target_link_libraries(test_safetensors_asan PRIVATE
  GTest::gtest_main nlohmann_json::nlohmann_json OpenMP::OpenMP_CXX ZLIB::ZLIB)

# The same compiled-in paths as every test (tests/CMakeLists.txt).
target_compile_definitions(test_safetensors_asan PRIVATE ${MOE_TEST_PATHS})

gtest_discover_tests(test_safetensors_asan
  TEST_SUFFIX .asan
  DISCOVERY_TIMEOUT 60
  PROPERTIES FIXTURES_REQUIRED torch_fixtures TIMEOUT 600)
