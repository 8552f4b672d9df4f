package config

import "reflect"

var reflectTypeOfConfig = reflect.TypeFor[Config]()
