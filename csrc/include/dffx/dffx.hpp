// Umbrella header of the dffx C++ core: #include <dffx/dffx.hpp> and link dffx::core.
#pragma once
#include "dffx/build_config.hpp"
#include "dffx/version.hpp"
#include "dffx/camera.hpp"
#include "dffx/raster.hpp"
#include "dffx/shape_fit.hpp"
#include "dffx/angular_softmax.hpp"
#include "dffx/sampling.hpp"
#include "dffx/cascade.hpp"
