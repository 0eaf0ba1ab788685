# peel_library(<name> DEPS <targets...>): the folder's *.cpp files (recursively, picked up as they
# are added) become library peel_<name>; its headers are included as "<folder>/<file>.h".
function(peel_library name)
  cmake_parse_arguments(ARG "" "" "DEPS" ${ARGN})
  file(GLOB_RECURSE sources CONFIGURE_DEPENDS ${CMAKE_CURRENT_SOURCE_DIR}/*.cpp)
  list(FILTER sources EXCLUDE REGEX ".*/main\\.cpp$")
  if(sources)
    add_library(peel_${name} ${sources})
    target_link_libraries(peel_${name} PUBLIC peel_flags ${ARG_DEPS})
  else()  # a folder whose sources are still to come
    add_library(peel_${name} INTERFACE)
    target_link_libraries(peel_${name} INTERFACE peel_flags ${ARG_DEPS})
  endif()
endfunction()
