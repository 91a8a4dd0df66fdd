package render

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rsa"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"fmt"
	"math/big"
)

// PublicKeyPEM returns the public key of k as a PKIX "PUBLIC KEY" PEM block.
func PublicKeyPEM(k *JWK) ([]byte, error) {
	pub, err := publicKey(k)
	if err != nil {
		return nil, err
	}
	der, err := x509.MarshalPKIXPublicKey(pub)
	if err != nil {
		return nil, fmt.Errorf("encode public key: %w", err)
	}
	return pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: der}), nil
}

func publicKey(k *JWK) (crypto.PublicKey, error) {
	switch k.Kty {
	case "RSA", "RSA-HSM":
		if len(k.N) == 0 || len(k.E) == 0 {
			return nil, errors.New("RSA key without n or e")
		}
		e := new(big.Int).SetBytes(k.E)
		if !e.IsInt64() || e.Int64() > 1<<31-1 {
			return nil, errors.New("RSA public exponent out of range")
		}
		return &rsa.PublicKey{N: new(big.Int).SetBytes(k.N), E: int(e.Int64())}, nil
	case "EC", "EC-HSM":
		var curve elliptic.Curve
		switch k.Crv {
		case "P-256":
			curve = elliptic.P256()
		case "P-384":
			curve = elliptic.P384()
		case "P-521":
			curve = elliptic.P521()
		default:
			return nil, fmt.Errorf("EC curve %q is not supported (P-256, P-384, P-521 are)", k.Crv)
		}
		size := (curve.Params().BitSize + 7) / 8
		if len(k.X) == 0 || len(k.X) > size || len(k.Y) == 0 || len(k.Y) > size {
			return nil, fmt.Errorf("EC key coordinates do not fit curve %s", k.Crv)
		}
		point := make([]byte, 1+2*size)
		point[0] = 4 // uncompressed
		copy(point[1+size-len(k.X):1+size], k.X)
		copy(point[1+2*size-len(k.Y):], k.Y)
		pub, err := ecdsa.ParseUncompressedPublicKey(curve, point)
		if err != nil {
			return nil, fmt.Errorf("EC public key: %w", err)
		}
		return pub, nil
	case "oct", "oct-HSM":
		return nil, errors.New("a symmetric key has no public key to write")
	}
	return nil, fmt.Errorf("key type %q is not supported (RSA and EC are)", k.Kty)
}
