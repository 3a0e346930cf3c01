package redisinfer

import "fmt"

// Typed views of a tensor's elements: each checks the datatype, then unpacks as Values does.

func (t Tensor) typed(dt Datatype) (interface{}, error) {
	if t.Datatype != dt {
		return nil, fmt.Errorf("tensor %q is %s, not %s", t.Name, t.Datatype, dt)
	}
	return t.Values()
}

// Float32s returns the elements of an FP32 tensor.
func (t Tensor) Float32s() ([]float32, error) {
	v, err := t.typed(FP32)
	if err != nil {
		return nil, err
	}
	return v.([]float32), nil
}

// Float64s returns the elements of an FP64 tensor.
func (t Tensor) Float64s() ([]float64, error) {
	v, err := t.typed(FP64)
	if err != nil {
		return nil, err
	}
	return v.([]float64), nil
}

// Float16s returns the elements of an FP16 tensor, as bits (Float16.Float32 converts).
func (t Tensor) Float16s() ([]Float16, error) {
	v, err := t.typed(FP16)
	if err != nil {
		return nil, err
	}
	return v.([]Float16), nil
}

// Int8s returns the elements of an INT8 tensor.
func (t Tensor) Int8s() ([]int8, error) {
	v, err := t.typed(INT8)
	if err != nil {
		return nil, err
	}
	return v.([]int8), nil
}

// Int16s returns the elements of an INT16 tensor.
func (t Tensor) Int16s() ([]int16, error) {
	v, err := t.typed(INT16)
	if err != nil {
		return nil, err
	}
	return v.([]int16), nil
}

// Int32s returns the elements of an INT32 tensor.
func (t Tensor) Int32s() ([]int32, error) {
	v, err := t.typed(INT32)
	if err != nil {
		return nil, err
	}
	return v.([]int32), nil
}

// Int64s returns the elements of an INT64 tensor.
func (t Tensor) Int64s() ([]int64, error) {
	v, err := t.typed(INT64)
	if err != nil {
		return nil, err
	}
	return v.([]int64), nil
}

// Uint8s returns the elements of a UINT8 tensor.
func (t Tensor) Uint8s() ([]uint8, error) {
	v, err := t.typed(UINT8)
	if err != nil {
		return nil, err
	}
	return v.([]uint8), nil
}

// Uint16s returns the elements of a UINT16 tensor.
func (t Tensor) Uint16s() ([]uint16, error) {
	v, err := t.typed(UINT16)
	if err != nil {
		return nil, err
	}
	return v.([]uint16), nil
}

// Uint32s returns the elements of a UINT32 tensor.
func (t Tensor) Uint32s() ([]uint32, error) {
	v, err := t.typed(UINT32)
	if err != nil {
		return nil, err
	}
	return v.([]uint32), nil
}

// Uint64s returns the elements of a UINT64 tensor.
func (t Tensor) Uint64s() ([]uint64, error) {
	v, err := t.typed(UINT64)
	if err != nil {
		return nil, err
	}
	return v.([]uint64), nil
}

// Bools returns the elements of a BOOL tensor (any non-zero byte is true).
func (t Tensor) Bools() ([]bool, error) {
	v, err := t.typed(BOOL)
	if err != nil {
		return nil, err
	}
	return v.([]bool), nil
}

// ByteStrings returns the elements of a BYTES tensor (sharing the tensor's data).
func (t Tensor) ByteStrings() ([][]byte, error) {
	v, err := t.typed(BYTES)
	if err != nil {
		return nil, err
	}
	return v.([][]byte), nil
}
