# One INTERFACE target that carries the shared compile settings (house style §8).
set(CMAKE_CXX_STANDARD 17)
set(CMAKE_CXX_STANDARD_REQUIRED ON)
set(CMAKE_CXX_EXTENSIONS OFF)
set(CMAKE_EXPORT_COMPILE_COMMANDS ON)

if(NOT CMAKE_BUILD_TYPE AND NOT CMAKE_CONFIGURATION_TYPES)
  set(CMAKE_BUILD_TYPE Release CACHE STRING "Build type" FORCE)
endif()

find_program(CCACHE_PROGRAM ccache)
if(CCACHE_PROGRAM AND NOT CMAKE_CXX_COMPILER_LAUNCHER)
  set(CMAKE_CXX_COMPILER_LAUNCHER "${CCACHE_PROGRAM}")
endif()

add_library(upcycle_settings INTERFACE)
target_compile_options(upcycle_settings INTERFACE -Wall -Wextra -Wno-unused-parameter)
# Qt's signals/slots/emit macros collide with names in torch headers.
target_compile_definitions(upcycle_settings INTERFACE QT_NO_KEYWORDS
  UPCYCLE_VERSION="${PROJECT_VERSION}")
